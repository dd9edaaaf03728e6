package marketplace

import (
	"testing"

	"github.com/microengine/microengine/host/config"
)

func TestFilterOperators(t *testing.T) {
	fields := map[string]string{"mimetype": "image/png", "size": "2048", "filename": "Invoice.PDF.exe", "id": "12"}
	for _, tc := range []struct {
		field, op, value string
		want             bool
	}{
		{"mimetype", "startswith", "image/", true},
		{"mimetype", "startswith", "text/", false},
		{"filename", "endswith", ".exe", true},
		{"filename", "contains", "PDF", true},
		{"filename", "regex", `(?i)invoice.*\.exe$`, true},
		{"filename", "regex", `^x`, false},
		{"size", "<", "4096", true},
		{"size", "<=", "2048", true},
		{"size", ">", "2048", false},
		{"size", ">=", "2048", true},
		{"size", "==", "2048.0", true}, // numbers compare as numbers
		{"mimetype", "==", "image/png", true},
		{"mimetype", "<", "5", false}, // not a number: no match
		{"absent", "==", "", false},   // an absent field matches nothing
	} {
		fs, err := NewFilters([]config.Filter{{Action: "accept", Field: tc.field, Op: config.FilterOp(tc.op), Value: tc.value}})
		if err != nil {
			t.Fatal(err)
		}
		if got, _ := fs.Allowed(fields); got != tc.want {
			t.Errorf("%s %s %q: %v, want %v", tc.field, tc.op, tc.value, got, tc.want)
		}
	}
}

func TestFilterAcceptReject(t *testing.T) {
	fs, err := NewFilters([]config.Filter{
		{Action: "accept", Field: "mimetype", Op: "startswith", Value: "application/"},
		{Action: "accept", Field: "mimetype", Op: "startswith", Value: "text/"},
		{Action: "reject", Field: "filename", Op: "endswith", Value: ".iso"},
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		fields map[string]string
		want   bool
	}{
		{map[string]string{"mimetype": "text/plain"}, true},
		{map[string]string{"mimetype": "application/pdf", "filename": "a.pdf"}, true},
		{map[string]string{"mimetype": "application/x-iso9660", "filename": "a.iso"}, false},
		{map[string]string{"mimetype": "image/png"}, false},
		{map[string]string{}, false},
	} {
		if got, why := fs.Allowed(tc.fields); got != tc.want || (!got && why == "") {
			t.Errorf("%v: %v %q, want %v", tc.fields, got, why, tc.want)
		}
	}
}

func TestFilterConfidence(t *testing.T) {
	fs, err := NewFilters([]config.Filter{
		{Action: "favor", Field: "mimetype", Op: "==", Value: "application/pdf"},
		{Action: "penalize", Field: "size", Op: ">", Value: "1000"},
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		fields map[string]string
		in     float64
		want   float64
	}{
		{map[string]string{"mimetype": "application/pdf"}, 0.5, 0.6},
		{map[string]string{"mimetype": "application/pdf"}, 0.9, 1}, // clamped
		{map[string]string{"size": "5000"}, 0.5, 0.4},
		{map[string]string{"mimetype": "application/pdf", "size": "5000"}, 0.5, 0.48},
		{map[string]string{}, 0.5, 0.5},
	} {
		if got := fs.Adjust(tc.fields, tc.in); got < tc.want-1e-9 || got > tc.want+1e-9 {
			t.Errorf("%v: %v → %v, want %v", tc.fields, tc.in, got, tc.want)
		}
	}
}

func TestFilterInvalid(t *testing.T) {
	for _, f := range []config.Filter{
		{Action: "accept", Field: "x", Op: "regex", Value: "("},
		{Action: "accept", Field: "x", Op: "<", Value: "ten"},
		{Action: "accept", Field: "x", Op: "~=", Value: "a"},
		{Action: "ignore", Field: "x", Op: "==", Value: "a"},
	} {
		if _, err := NewFilters([]config.Filter{f}); err == nil {
			t.Errorf("%+v accepted", f)
		}
	}
}
