package shared

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"reflect"
	"sort"
	"strings"
	"time"
)

// ConfigChecker is a config struct that checks its own values. DecodeConfig
// calls CheckConfig once the attributes are decoded, and the faults it adds
// are reported with the decoding faults, so one refusal lists them all.
type ConfigChecker interface {
	CheckConfig(ce *ConfigError)
}

// DecodeConfig reads a plugin's config block, as Configure receives it,
// into the struct v points to. Fill v with the defaults first: an attribute
// that is absent or null keeps its default, and an empty block (or null)
// means the defaults.
//
// Each exported field is one attribute, named by its `json` tag (the Go
// field name when there is none; `json:"-"` skips it). Decoding is strict:
// an attribute no field names is refused, and so is a value of the wrong
// type. A time.Duration takes a Go duration string ("30s", "1m30s"), as the
// host sends it; a Size takes a whole number of bytes, as the host sends it,
// or a size string such as "25M" or "100MiB"; whole-number fields take 8.0
// as well as 8. Other types are decoded as encoding/json does, without
// unknown fields.
//
// Every fault is reported, each under its attribute's name, in one
// *ConfigError; when v implements ConfigChecker its faults join them. v is
// changed only when there is no fault, so a refused block leaves v as it
// was. A v that is not a non-nil pointer to a struct is a programming error
// and panics.
func DecodeConfig(raw []byte, v any) error {
	rv := reflect.ValueOf(v)
	if rv.Kind() != reflect.Pointer || rv.IsNil() || rv.Elem().Kind() != reflect.Struct {
		panic(fmt.Sprintf("shared.DecodeConfig: want a non-nil pointer to a struct, got %T", v))
	}
	// Decode into a copy: v changes only when the whole block is good.
	next := reflect.New(rv.Elem().Type())
	next.Elem().Set(rv.Elem())

	ce := &ConfigError{}
	attrs, err := configObject(raw)
	if err != nil {
		return ce.Add("", "%v", err)
	}
	fields := configFields(next.Elem().Type())
	names := make([]string, 0, len(attrs))
	for name := range attrs {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		val := attrs[name]
		idx, ok := fields[name]
		if !ok {
			ce.Add(name, "unknown attribute (known: %s)", strings.Join(sortedKeys(fields), ", "))
			continue
		}
		if string(bytes.TrimSpace(val)) == "null" {
			continue
		}
		if err := decodeConfigValue(val, next.Elem().Field(idx)); err != nil {
			ce.Add(name, "%v", err)
		}
	}
	if c, ok := next.Interface().(ConfigChecker); ok {
		c.CheckConfig(ce)
	}
	if err := ce.Err(); err != nil {
		return err
	}
	rv.Elem().Set(next.Elem())
	return nil
}

// configObject splits the block into its attributes. Empty input and null
// are an empty block.
func configObject(raw []byte) (map[string]json.RawMessage, error) {
	if len(bytes.TrimSpace(raw)) == 0 {
		return nil, nil
	}
	var attrs map[string]json.RawMessage
	dec := json.NewDecoder(bytes.NewReader(raw))
	if err := dec.Decode(&attrs); err != nil {
		return nil, fmt.Errorf("config is not a JSON object: %w", err)
	}
	if dec.More() {
		return nil, fmt.Errorf("config holds more than one JSON value")
	}
	return attrs, nil
}

// configFields maps attribute names to field indexes of t.
func configFields(t reflect.Type) map[string]int {
	fields := make(map[string]int, t.NumField())
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		name := f.Name
		if tag, ok := f.Tag.Lookup("json"); ok {
			tag, _, _ = strings.Cut(tag, ",")
			if tag == "-" {
				continue
			}
			if tag != "" {
				name = tag
			}
		}
		fields[name] = i
	}
	return fields
}

func sortedKeys(m map[string]int) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

var (
	durationType = reflect.TypeOf(time.Duration(0))
	sizeType     = reflect.TypeOf(Size(0))
)

// decodeConfigValue sets f from one attribute's JSON value; the error says
// what was wanted, in an operator's words.
func decodeConfigValue(val json.RawMessage, f reflect.Value) error {
	switch f.Type() {
	case durationType:
		var s string
		if err := json.Unmarshal(val, &s); err != nil {
			return fmt.Errorf("want a duration such as \"30s\", got %s", val)
		}
		d, err := time.ParseDuration(strings.TrimSpace(s))
		if err != nil {
			return fmt.Errorf("want a duration such as \"30s\": %w", err)
		}
		f.SetInt(int64(d))
		return nil
	case sizeType:
		if n, ok := configNumber(val); ok {
			i, ok := wholeNumber(n)
			if !ok {
				return fmt.Errorf("want a whole number of bytes or a size such as \"25M\", got %s", val)
			}
			f.SetInt(i)
			return nil
		}
		var s string
		if err := json.Unmarshal(val, &s); err != nil {
			return fmt.Errorf("want a whole number of bytes or a size such as \"25M\", got %s", val)
		}
		n, err := ParseSize(s)
		if err != nil {
			return err
		}
		f.SetInt(n)
		return nil
	}
	switch f.Kind() {
	case reflect.String:
		var s string
		if err := json.Unmarshal(val, &s); err != nil {
			return fmt.Errorf("want a string, got %s", val)
		}
		f.SetString(s)
	case reflect.Bool:
		var b bool
		if err := json.Unmarshal(val, &b); err != nil {
			return fmt.Errorf("want true or false, got %s", val)
		}
		f.SetBool(b)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		bits := f.Type().Bits()
		lo, hi := int64(-1)<<(bits-1), int64(1<<(bits-1)-1)
		n, ok := configNumber(val)
		if !ok {
			return fmt.Errorf("want a whole number, got %s", val)
		}
		i, ok := wholeNumber(n)
		if !ok {
			return fmt.Errorf("want a whole number, got %s", val)
		}
		if i < lo || i > hi {
			return fmt.Errorf("want a whole number from %d to %d, got %s", lo, hi, val)
		}
		f.SetInt(i)
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		hi := int64(math.MaxInt64)
		if bits := f.Type().Bits(); bits < 64 {
			hi = int64(1)<<bits - 1
		}
		n, ok := configNumber(val)
		if !ok {
			return fmt.Errorf("want a whole number, got %s", val)
		}
		i, ok := wholeNumber(n)
		if !ok {
			return fmt.Errorf("want a whole number, got %s", val)
		}
		if i < 0 || i > hi {
			return fmt.Errorf("want a whole number from 0 to %d, got %s", hi, val)
		}
		f.SetUint(uint64(i))
	case reflect.Float32, reflect.Float64:
		n, ok := configNumber(val)
		if !ok {
			return fmt.Errorf("want a number, got %s", val)
		}
		x, err := n.Float64()
		if err != nil || math.IsInf(x, 0) || math.IsNaN(x) {
			return fmt.Errorf("want a number, got %s", val)
		}
		f.SetFloat(x)
	default:
		p := reflect.New(f.Type())
		dec := json.NewDecoder(bytes.NewReader(val))
		dec.DisallowUnknownFields()
		if err := dec.Decode(p.Interface()); err != nil {
			return fmt.Errorf("want a %s: %w", f.Type(), err)
		}
		f.Set(p.Elem())
	}
	return nil
}

// configNumber returns val as a JSON number, if it is one.
func configNumber(val json.RawMessage) (json.Number, bool) {
	dec := json.NewDecoder(bytes.NewReader(val))
	dec.UseNumber()
	var x any
	if err := dec.Decode(&x); err != nil {
		return "", false
	}
	n, ok := x.(json.Number)
	return n, ok
}

// wholeNumber reads n as an int64. 8.0 is a whole number too, as some
// encoders write it (beyond 2^53 a float is no longer exact: refused).
func wholeNumber(n json.Number) (int64, bool) {
	if i, err := n.Int64(); err == nil {
		return i, true
	}
	f, err := n.Float64()
	if err != nil || f != math.Trunc(f) || math.Abs(f) > 1<<53 {
		return 0, false
	}
	return int64(f), true
}
