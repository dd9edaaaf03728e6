// Package answerschema checks an engine's answers against the JSON Schema
// of what the marketplace accepts (testdata/answer.schema.json: the answer
// as the protocol defines it, with polyswarm-artifact's ScanMetadata). The
// marketplace tests, the simulator and the end-to-end harness run every
// answer they receive through Check, with a real JSON Schema validator.
package answerschema

import (
	"bytes"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/santhosh-tekuri/jsonschema/v6"
)

// Schema is the schema's text.
//
//go:embed testdata/answer.schema.json
var Schema []byte

// Kind is what a bounty's phase asks for.
type Kind string

const (
	// Assertion: verdict, bid, metadata (the assertion phase).
	Assertion Kind = "assertion"
	// Vote: verdict and metadata, no bid (the arbitration phase).
	Vote Kind = "vote"
)

const schemaURL = "urn:microengine:answer"

// compiled holds the schema's two entry points, compiled once: the
// schema is a constant of the program.
var compiled = sync.OnceValues(func() (map[Kind]*jsonschema.Schema, error) {
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(Schema))
	if err != nil {
		return nil, fmt.Errorf("answer schema: %w", err)
	}
	c := jsonschema.NewCompiler()
	if err := c.AddResource(schemaURL, doc); err != nil {
		return nil, fmt.Errorf("answer schema: %w", err)
	}
	out := map[Kind]*jsonschema.Schema{}
	for _, k := range []Kind{Assertion, Vote} {
		sch, err := c.Compile(schemaURL + "#/$defs/" + string(k))
		if err != nil {
			return nil, fmt.Errorf("answer schema: compile %s: %w", k, err)
		}
		out[k] = sch
	}
	return out, nil
})

// Check validates one answer body. The error lists every fault the
// validator found.
func Check(raw []byte, kind Kind) error {
	schemas, err := compiled()
	if err != nil {
		return err
	}
	sch, ok := schemas[kind]
	if !ok {
		return fmt.Errorf("answer schema: no %q answer (want assertion or vote)", kind)
	}
	v, err := jsonschema.UnmarshalJSON(bytes.NewReader(raw))
	if err != nil {
		return fmt.Errorf("answer is not JSON: %w", err)
	}
	if err := sch.Validate(v); err != nil {
		var ve *jsonschema.ValidationError
		if errors.As(err, &ve) {
			return fmt.Errorf("answer breaks the schema: %s", strings.Join(strings.Fields(ve.Error()), " "))
		}
		return fmt.Errorf("answer breaks the schema: %w", err)
	}
	return checkBidLiteral(raw)
}

// checkBidLiteral: to JSON Schema 1e18 and 1000000000000000000.0 are
// integers; the marketplace takes only an integer literal.
func checkBidLiteral(raw []byte) error {
	var a struct {
		Bid json.RawMessage `json:"bid"`
	}
	if err := json.Unmarshal(raw, &a); err != nil {
		return fmt.Errorf("answer is not a JSON object: %w", err)
	}
	if b := bytes.TrimSpace(a.Bid); len(b) > 0 && bytes.ContainsAny(b, ".eE") {
		return fmt.Errorf("bid %s is not a JSON integer literal", b)
	}
	return nil
}
