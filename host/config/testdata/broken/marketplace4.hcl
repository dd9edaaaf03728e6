marketplace {
  listen         = ":8080"
  webhook_secret = []
  tls_cert       = "missing-cert.pem"
  tls_key        = "missing-key.pem"
}
