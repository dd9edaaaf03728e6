plugin "fake" {
  path = "plugins/microengine-plugin-fake"
}
