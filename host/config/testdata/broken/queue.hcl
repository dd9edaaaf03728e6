queue {
  servers  = ["nats://10.0.0.1:4222", "http://10.0.0.2:4222", "10.0.0.3"]
  replicas = 6
  sync     = "always"
  tls_key  = "key.pem"
}
queue {}
