marketplace {
  listen            = "localhost"
  webhook_secret    = env("MICROENGINE_TEST_UNSET_VARIABLE")
  tls_cert          = "cert.pem"
  max_body_size     = "1 parsec"
  workers           = 0
  queue_size        = -1
  safety_margin     = 2
  max_artifact_size = 1.5
  fetch_timeout     = "0s"
  max_redirects     = "many"
  retention         = "forever"
  record_grace      = "500ms"

  bid {
    strategy = "yolo"
  }

  filter "reject" {
    field = "mimetype"
    op    = "like"
    value = "image/"
  }
  filter "drop" {
    field = "mimetype"
    op    = "=="
    value = "x"
  }
  filter "accept" {
    field = "size"
    op    = "<"
    value = "big"
  }
  filter "favor" {
    field = "filename"
    op    = "regex"
    value = "(unclosed"
  }
  filter "penalize" {
    op = "contains"
  }
}
