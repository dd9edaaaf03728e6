package rules

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func write(t *testing.T, dir, name, src string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

const good = `rule r { strings: $a = "abc" condition: $a }`

// Two faults in one file, on lines 3 and 8: both are reported, with their
// lines (go-yara's AddFile returns only the last).
const twoFaults = `rule a {
  condition:
    nosuch1
}

rule b {
  condition:
    nosuch2 and
    true
}
`

func TestEveryErrorWithFileAndLineAndTheRestLoads(t *testing.T) {
	dir := t.TempDir()
	bad := write(t, dir, "bad.yar", twoFaults)
	write(t, dir, "a/one.yar", good)
	write(t, dir, "b/one.yara", good) // same rule name, other namespace: no clash
	write(t, dir, "notes.txt", "not a rule file, skipped by the directory walk")
	set, err := Load(Spec{Paths: []string{dir}})
	if err != nil {
		t.Fatal(err)
	}
	if set.RuleCount != 2 || !reflect.DeepEqual(set.Namespaces, []string{"a/one", "b/one"}) {
		t.Errorf("rules %d, namespaces %v; want 2 in a/one and b/one", set.RuleCount, set.Namespaces)
	}
	want := []Skipped{{File: bad, Errors: []Diagnostic{
		{File: bad, Line: 3, Message: `undefined identifier "nosuch1"`},
		{File: bad, Line: 8, Message: `undefined identifier "nosuch2"`},
	}}}
	if !reflect.DeepEqual(set.Skipped, want) {
		t.Errorf("skipped %+v\nwant    %+v", set.Skipped, want)
	}
	if got := set.Skipped[0].Errors[1].String(); got != bad+`:8: undefined identifier "nosuch2"` {
		t.Errorf("diagnostic prints %q", got)
	}

	_, err = Load(Spec{Paths: []string{dir}, Strict: true})
	var re *Error
	if !errors.As(err, &re) || len(re.Files) != 1 || len(re.Files[0].Errors) != 2 {
		t.Fatalf("strict: %v; want both errors of bad.yar", err)
	}
	if !strings.Contains(err.Error(), "bad.yar:3:") || !strings.Contains(err.Error(), "bad.yar:8:") {
		t.Errorf("strict error %q lacks file:line", err)
	}
}

func TestPathsFilesGlobsAndFaults(t *testing.T) {
	dir := t.TempDir()
	x := write(t, dir, "x.rules", good) // named outright: any extension
	write(t, dir, "g/1.yar", good)
	write(t, dir, "g/2.yar", `rule s { condition: true }`)
	set, err := Load(Spec{Paths: []string{x, filepath.Join(dir, "g", "*.yar")}})
	if err != nil {
		t.Fatal(err)
	}
	if set.RuleCount != 3 || len(set.Files) != 3 {
		t.Errorf("loaded %d rules from %v; want 3 from 3 files", set.RuleCount, set.Files)
	}

	_, err = Load(Spec{Paths: []string{x, filepath.Join(dir, "missing.yar"), filepath.Join(dir, "*.none"), t.TempDir()}})
	var re *Error
	if !errors.As(err, &re) {
		t.Fatalf("got %v; want an *Error", err)
	}
	if len(re.Paths) != 3 || re.Paths[0] != "" {
		t.Fatalf("path faults %v; want entries 1, 2 and 3", re.Paths)
	}
	for i, want := range map[int]string{1: "no such file", 2: "matches no file", 3: "holds no rule files"} {
		if !strings.Contains(re.Paths[i], want) {
			t.Errorf("rules[%d]: %q; want it to say %q", i, re.Paths[i], want)
		}
	}

	_, err = Load(Spec{Paths: []string{write(t, dir, "only-bad.yar", twoFaults)}})
	if !errors.As(err, &re) || !strings.Contains(re.Reason, "none of the 1 rule files compiled") {
		t.Errorf("a set where nothing compiles: %v; want it refused", err)
	}
}

func TestDefaultExternalsLetPublicStyleRulesCompile(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, "ext.yar", `rule e { condition: filename == "x" or filepath contains "y" or extension == ".exe" or filetype == "EXE" or owner == "root" }`)
	write(t, dir, "extra.yar", `rule n { condition: level > 2 and enabled and tag == "t" }`)
	if _, err := Load(Spec{Paths: []string{filepath.Join(dir, "ext.yar")}}); err != nil {
		t.Errorf("the default externals: %v", err)
	}
	set, err := Load(Spec{Paths: []string{dir}})
	if err != nil || len(set.Skipped) != 1 || !strings.Contains(set.Skipped[0].Errors[0].Message, "undefined identifier") {
		t.Fatalf("without the extra externals: %v, %+v; want extra.yar skipped", err, set)
	}
	set, err = Load(Spec{Paths: []string{dir}, Externals: map[string]any{"level": int64(3), "enabled": true, "tag": "t"}})
	if err != nil || len(set.Skipped) != 0 || set.RuleCount != 2 {
		t.Fatalf("with the extra externals: %v, %+v", err, set)
	}
}

func TestDigestFollowsTheSources(t *testing.T) {
	dir := t.TempDir()
	p := write(t, dir, "r.yar", good)
	a, err := Load(Spec{Paths: []string{dir}})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := Load(Spec{Paths: []string{dir}})
	if a.Version() != b.Version() || !strings.HasPrefix(a.Version(), "1 rules ") {
		t.Errorf("versions %q and %q of the same sources", a.Version(), b.Version())
	}
	write(t, dir, "r.yar", good+"\nrule r2 { condition: false }\n")
	c, _ := Load(Spec{Paths: []string{p}})
	if c.Version() == a.Version() || !strings.HasPrefix(c.Version(), "2 rules ") {
		t.Errorf("changed sources kept version %q", c.Version())
	}
}

func TestTheProjectRuleSetCompiles(t *testing.T) {
	set, err := Load(Spec{Paths: []string{"../../../testdata/yara"}, Strict: true})
	if err != nil {
		t.Fatal(err)
	}
	if set.RuleCount < 10 {
		t.Errorf("testdata/yara holds %d rules; want every mapping case", set.RuleCount)
	}
}

// TestCollectionLikeFiles: what public collections hold — modules, includes
// relative to the including file, a module this libyara lacks (string,
// new in 4.3), rules that need an external nobody defined — loads what
// compiles and names the rest at file:line.
func TestCollectionLikeFiles(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, "apt/common.yara", `private rule is_mz { condition: uint16(0) == 0x5A4D }`)
	write(t, dir, "apt/dropper.yar", "include \"common.yara\"\nimport \"pe\"\nimport \"math\"\n"+
		`rule dropper { condition: is_mz and pe.number_of_sections > 0 and math.entropy(0, filesize) > 7.0 }`)
	newer := write(t, dir, "new/strings.yar", "import \"string\"\nrule s { condition: string.length(\"x\") == 1 }\n")
	needs := write(t, dir, "thor/ext.yar", "rule t {\n  condition:\n    sha256_of_parent == \"x\"\n}\n")
	set, err := Load(Spec{Paths: []string{dir}})
	if err != nil {
		t.Fatal(err)
	}
	// apt/common.yara loads alone and again through the include: two
	// namespaces, so no clash.
	if set.RuleCount != 3 || len(set.Files) != 2 {
		t.Errorf("loaded %d rules from %v", set.RuleCount, set.Files)
	}
	got := map[string]string{}
	for _, sk := range set.Skipped {
		got[sk.File] = sk.Errors[0].String()
	}
	if got[newer] != newer+`:1: unknown module "string"` || got[needs] != needs+`:3: undefined identifier "sha256_of_parent"` || len(got) != 2 {
		t.Errorf("skipped %v", got)
	}
}
