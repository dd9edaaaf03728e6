plugin "fake" {
  path = "bin/microengine-plugin-fake"
}
