package config

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/hashicorp/hcl/v2"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/function"
)

// NewEvalContext returns the context engine.hcl is evaluated in. It has no
// variables and four functions:
//
//   - env("NAME") is the environment variable NAME, or "" when it is unset.
//     Unset is not an error here: the attribute that needs a value (such as
//     marketplace.webhook_secret) reports an empty one at its own line,
//     which says more than "variable not set" at the call would.
//   - file("PATH") is the content of a file, PATH relative to dir (the
//     config file's folder).
//   - abspath("PATH") is PATH made absolute against the config file's
//     folder, for paths handed to a plugin (which runs in the host's working
//     folder, not the config's): address = "unix://${abspath("run/clamd.sock")}".
//   - trimspace(S) drops leading and trailing white space, for secrets kept
//     in files that end with a newline: trimspace(file("secret")).
//
// The context is never modified after it is built, so it may be shared.
func NewEvalContext(dir string) *hcl.EvalContext {
	return &hcl.EvalContext{
		Functions: map[string]function.Function{
			"env": function.New(&function.Spec{
				Description: "The value of an environment variable, or an empty string when it is unset.",
				Params:      []function.Parameter{{Name: "name", Type: cty.String}},
				Type:        function.StaticReturnType(cty.String),
				Impl: func(args []cty.Value, _ cty.Type) (cty.Value, error) {
					return cty.StringVal(os.Getenv(args[0].AsString())), nil
				},
			}),
			"file": function.New(&function.Spec{
				Description: "The content of a file, relative to the config file's folder.",
				Params:      []function.Parameter{{Name: "path", Type: cty.String}},
				Type:        function.StaticReturnType(cty.String),
				Impl: func(args []cty.Value, _ cty.Type) (cty.Value, error) {
					b, err := os.ReadFile(resolve(dir, args[0].AsString()))
					if err != nil {
						return cty.NilVal, fmt.Errorf("read file: %w", err)
					}
					return cty.StringVal(string(b)), nil
				},
			}),
			"abspath": function.New(&function.Spec{
				Description: "The path made absolute against the config file's folder.",
				Params:      []function.Parameter{{Name: "path", Type: cty.String}},
				Type:        function.StaticReturnType(cty.String),
				Impl: func(args []cty.Value, _ cty.Type) (cty.Value, error) {
					return cty.StringVal(resolve(dir, args[0].AsString())), nil
				},
			}),
			"trimspace": function.New(&function.Spec{
				Description: "The string without leading and trailing white space.",
				Params:      []function.Parameter{{Name: "s", Type: cty.String}},
				Type:        function.StaticReturnType(cty.String),
				Impl: func(args []cty.Value, _ cty.Type) (cty.Value, error) {
					return cty.StringVal(strings.TrimSpace(args[0].AsString())), nil
				},
			}),
		},
	}
}

// resolve makes p absolute against dir, the config file's folder.
func resolve(dir, p string) string {
	if filepath.IsAbs(p) {
		return filepath.Clean(p)
	}
	return filepath.Join(dir, p)
}
