marketplace {
  tls_key = "key.pem"

  bid {
    strategy       = "aggressive"
    min_multiplier = 8
  }
  bid {
  }
}

marketplace {
}
