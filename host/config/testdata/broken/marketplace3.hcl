marketplace {
  listen         = "127.0.0.1:99999"
  webhook_secret = ["current", ""]

  bid {
    strategy       = "custom"
    min_multiplier = 0
    max_multiplier = "lots"
  }
}
