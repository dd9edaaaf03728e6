engine {
  log_level = "info
}
