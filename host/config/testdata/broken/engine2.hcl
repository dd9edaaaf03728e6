engine {
  concurrency     = 2.5
  health_interval = "0s"
  drain_timeout   = "ten seconds"
  admin           = "0.0.0.0:9090"
  swap            = true
}
