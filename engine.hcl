# microengine's default configuration: the eicar, clamav and yara plugins,
# clamav with a clamd of its own on the repo's test signatures (never the
# system service), yara on the project's own rules in testdata/yara.
# `microengine validate -config engine.hcl` checks it.

engine {
  data_dir  = "./build/data"
  log_level = "info"
  swap      = "watch" # replace a plugin when its binary changes on disk
  # How many plugins must answer malicious for the verdict to be malicious
  # (fewer: suspicious). 1: any backend's detection carries.
  malicious_quorum = 1
}

plugin "eicar" {
  path    = "./bin/microengine-plugin-eicar"
  timeout = "10s"
}

plugin "clamav" {
  path    = "./bin/microengine-plugin-clamav"
  timeout = "30s"
  config {
    # The plugin starts and supervises its own clamd on this signature
    # folder (relative to this file): the repo's test signatures here,
    # freshclam's folder (/var/lib/clamav) in production; a new daily there
    # is loaded without a restart. For clamds someone else runs, set
    # address instead: "unix:///run/clamav/clamd.ctl" (Debian's), or a list
    # of them, a pool.
    database        = "testdata/signatures"
    max_stream_size = "25M"
  }
}

plugin "yara" {
  path    = "./bin/microengine-plugin-yara"
  timeout = "30s"
  # Composition: max_verdict = "suspicious" would cap what this rule set
  # alone can claim (e.g. hunting rules); weight (0-1) scales its confidence.
  max_verdict = "malicious"
  weight      = 1
  config {
    rules     = ["./testdata/yara"] # files, directories (recursive: *.yar, *.yara), globs; relative to this file
    externals = { owner = "" }      # extra external variables (filename, filepath, extension, filetype, owner are built in)
    strict    = false               # true: one rule file that fails to compile refuses the whole config
  }
}

marketplace {
  listen = "127.0.0.1:8080"
  # For the local simulator only. In production:
  #   webhook_secret = env("WEBHOOK_SECRET")
  # (a list such as [env("NEW_SECRET"), env("OLD_SECRET")] rotates secrets).
  webhook_secret = "local-simulator-secret"
  # Prometheus metrics, apart from the webhook port (loopback only).
  metrics_listen = "127.0.0.1:9464"

  bid {
    strategy = "default"
  }

  # An image is never worth scanning for this engine: answer unknown, bid 0.
  filter "reject" {
    field = "mimetype"
    op    = "startswith"
    value = "image/"
  }
}
