plugin "missing" {
  path = "../plugins/does-not-exist"
}

plugin "noexec" {
  path = "../plugins/not-executable"
}

plugin "dir" {
  path = "../plugins"
}

plugin "badpin" {
  path   = "../plugins/microengine-plugin-fake"
  sha256 = "abc123"
}

plugin "mismatch" {
  path   = "../plugins/microengine-plugin-fake"
  sha256 = "0000000000000000000000000000000000000000000000000000000000000000"
}

plugin "types" {
  path    = "../plugins/microengine-plugin-fake"
  timeout = "30"
  enabled = "yes"
}

plugin "nopath" {
  timeout = 30
}

plugin "bad name!" {
  path = "../plugins/microengine-plugin-fake"
  config {}
  config {}
}
