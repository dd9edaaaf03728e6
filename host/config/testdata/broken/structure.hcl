engin {
}

engine {
  log_level  = "info"
  concurency = 4
}

engine {
}

plugin "fake" {
  path  = "../plugins/microengine-plugin-fake"
  color = "blue"
  settings {
  }
}

plugin "fake" {
  path = "../plugins/microengine-plugin-fake"
}

plugin {
}
