# A complete engine.hcl: every attribute set, to check decoding.
engine {
  data_dir        = "./state"
  log_level       = "debug"
  concurrency     = 8
  swap            = "reload"
  health_interval = "5s"
  drain_timeout   = "2m"
  admin           = "127.0.0.1:9090"
  # Only one plugin is enabled below, so 1 is the most it can be.
  malicious_quorum = 1
}

plugin "fake" {
  path    = "./plugins/microengine-plugin-fake" # relative to this file
  sha256  = "C2F9CD022BA2E6BBEE2BE1F05061046F19745F439E1728867E414440C26A0B80"
  timeout = "30s"
  enabled = true
  # A hunting set: it alone can claim no more than suspicious.
  max_verdict = "suspicious"
  weight      = 0.5

  config {
    address     = "unix:///run/clamav/clamd.ctl"
    max_stream  = "25M"
    ping_every  = "1m30s"
    retries     = 3
    alert_limit = true
  }
}

plugin "off" {
  # Disabled: its binary need not exist.
  path    = "plugins/not-built-yet"
  enabled = false
}

marketplace {
  listen            = "127.0.0.1:8080"
  webhook_secret    = [env("MICROENGINE_TEST_SECRET"), "old-secret"]
  max_body_size     = 2097152
  workers           = 2
  queue_size        = 16
  safety_margin     = "3s"
  max_artifact_size = "100MiB"
  fetch_timeout     = "15s"
  max_redirects     = 0
  retention         = "24h"
  record_grace      = "30m"
  metrics_listen    = "127.0.0.1:0"
  max_connections   = 100
  max_webhooks_in_flight = 8

  bid {
    strategy       = "custom"
    min_multiplier = 2
    max_multiplier = 0.5
  }

  filter "reject" {
    field = "mimetype"
    op    = "startswith"
    value = "image/"
  }
  filter "favor" {
    field = "mimetype"
    op    = "=="
    value = "application/x-dosexec"
  }
  filter "accept" {
    field = "size"
    op    = "<"
    value = 1048576
  }
}
