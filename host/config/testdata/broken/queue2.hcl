queue {
  replicas    = 3
  sync        = "sometimes"
  credentials = "not a creds file"
}
