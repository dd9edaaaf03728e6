engine {
  log_level       = "verbose"
  concurrency     = "four"
  swap            = "sometimes"
  health_interval = 10
  drain_timeout   = "-5s"
  data_dir        = ""
}
