plugin "missing" {
  path = "../bin/does-not-exist"
}

plugin "noexec" {
  path = "../bin/not-executable"
}

plugin "dir" {
  path = "../bin"
}

plugin "badpin" {
  path   = "../bin/microengine-plugin-fake"
  sha256 = "abc123"
}

plugin "mismatch" {
  path   = "../bin/microengine-plugin-fake"
  sha256 = "0000000000000000000000000000000000000000000000000000000000000000"
}

plugin "types" {
  path    = "../bin/microengine-plugin-fake"
  timeout = "30"
  enabled = "yes"
}

plugin "nopath" {
  timeout = 30
}

plugin "bad name!" {
  path = "../bin/microengine-plugin-fake"
  config {}
  config {}
}
