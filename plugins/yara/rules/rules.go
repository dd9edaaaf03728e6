// Package rules finds YARA rule files and compiles them with libyara into
// one rule set, each file in its own namespace, keeping every compiler
// error with its file and line.
//
// Real rule collections always hold some files that do not compile here: a
// module this libyara lacks, an external variable nobody defined, a syntax
// newer than 4.2. A file that fails is therefore skipped and reported, and
// the others load (unless Spec.Strict). The files are first compiled
// together; libyara's compiler cannot be used after its first failing file,
// so when one fails every file is compiled alone, on a compiler of its own
// (which gives all of its errors, with their lines), and the files that
// passed are compiled together again: a file's namespace keeps its
// identifiers apart from the other files', so that pass cannot fail where
// the lone ones passed.
package rules

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/hillu/go-yara/v4"
)

// Extensions of the files a directory contributes (a file named outright,
// or by a glob, is taken whatever its name).
var Extensions = []string{".yar", ".yara"}

// DefaultExternals are the external variables that the widely used public
// rule collections expect the scanner to define (YARA's own command-line
// tool leaves them to -d). They are strings; the plugin sets each one from
// the artifact when it knows a value and leaves it empty otherwise, so such
// collections compile without edits.
var DefaultExternals = []string{"filename", "filepath", "extension", "filetype", "owner"}

// Spec says what to load.
type Spec struct {
	// Paths are files, directories (searched recursively for Extensions)
	// and globs. Relative paths are taken from the working directory.
	Paths []string
	// Externals are extra external variables (string, int64, bool or
	// float64 values) on top of DefaultExternals, which they may override.
	Externals map[string]any
	// Strict refuses the whole set when one file fails to compile.
	Strict bool
	// Builtin are rules the caller always loads (namespace → source),
	// beside the files; they must compile.
	Builtin map[string]string
}

// Diagnostic is one compiler message, at a file and line.
type Diagnostic struct {
	File    string `json:"file"`
	Line    int    `json:"line"`
	Message string `json:"message"`
}

func (d Diagnostic) String() string {
	if d.Line > 0 {
		return fmt.Sprintf("%s:%d: %s", d.File, d.Line, d.Message)
	}
	return fmt.Sprintf("%s: %s", d.File, d.Message)
}

// Skipped is a file left out of the set, with every error it gave.
type Skipped struct {
	File   string       `json:"file"`
	Errors []Diagnostic `json:"errors"`
}

// Set is a compiled rule set and how it was made.
type Set struct {
	Rules *yara.Rules
	// Files that compiled, and the namespace each got (same order).
	Files      []string
	Namespaces []string
	Skipped    []Skipped
	Warnings   []Diagnostic
	// RuleCount is the number of rules in Rules.
	RuleCount int
	// Digest is the sha256 of the sources that compiled (names and bytes),
	// so the same rules give the same digest on every machine.
	Digest string
	// Externals holds every external variable defined, with its default.
	Externals map[string]any
	// Sources is every file considered, with its modification time and
	// size when it was read: a reload compares against it.
	Sources map[string]Stamp
}

// Stamp identifies one version of a file on disk.
type Stamp struct {
	ModTime int64
	Size    int64
}

// Version names the set for signatures_version: its rule count and a short
// digest of its sources, e.g. "12 rules 1a2b3c4d5e6f".
func (s *Set) Version() string {
	return fmt.Sprintf("%d rules %s", s.RuleCount, s.Digest[:12])
}

// Error is a set that could not be loaded. Paths holds faults of one entry
// of Spec.Paths (by index); Files holds the compile errors of the files that
// failed when they refuse the set (Strict, or nothing compiled at all).
type Error struct {
	Paths map[int]string
	Files []Skipped
	// Reason is a fault of the whole set, when there is one.
	Reason string
}

func (e *Error) Error() string {
	var parts []string
	idx := make([]int, 0, len(e.Paths))
	for i := range e.Paths {
		idx = append(idx, i)
	}
	sort.Ints(idx)
	for _, i := range idx {
		parts = append(parts, fmt.Sprintf("rules[%d]: %s", i, e.Paths[i]))
	}
	if e.Reason != "" {
		parts = append(parts, e.Reason)
	}
	for _, f := range e.Files {
		for _, d := range f.Errors {
			parts = append(parts, d.String())
		}
	}
	return "yara rules: " + strings.Join(parts, "; ")
}

// Load finds the rule files, compiles them and returns the set. A nil
// error may still come with Skipped files (when not Strict).
func Load(spec Spec) (*Set, error) {
	externals := Externals(spec.Externals)
	files, namespaces, sources, perr := Resolve(spec.Paths)
	if perr != nil {
		return nil, perr
	}
	builtin := make([]string, 0, len(spec.Builtin))
	for ns := range spec.Builtin {
		builtin = append(builtin, ns)
	}
	sort.Strings(builtin)
	set := &Set{Externals: externals, Sources: sources}
	srcs := make([][]byte, len(files))
	var readable, readableNS []string
	for i, f := range files {
		src, err := os.ReadFile(f)
		if err != nil {
			set.Skipped = append(set.Skipped, Skipped{File: f, Errors: []Diagnostic{{File: f, Message: err.Error()}}})
			continue
		}
		srcs[i] = src
		readable, readableNS = append(readable, f), append(readableNS, namespaces[i])
	}
	// Most sets compile whole: one pass. Only a set with a failing file
	// pays for the pass that compiles each file alone (a third of the
	// time on 1,000 files, 5,000 rules: 1.0 s of 3.0 s).
	if len(set.Skipped) == 0 {
		rules, warns, err := compileAll(readable, readableNS, externals, builtin, spec.Builtin)
		if err == nil {
			set.Files, set.Namespaces, set.Warnings = readable, readableNS, warns
			return set.finish(rules, srcs, namespaces, builtin, spec.Builtin), nil
		}
	}
	kept := make([][]byte, len(files))
	for i, f := range files {
		if srcs[i] == nil {
			continue
		}
		errs, warns := compileAlone(f, namespaces[i], externals)
		set.Warnings = append(set.Warnings, warns...)
		if len(errs) > 0 {
			set.Skipped = append(set.Skipped, Skipped{File: f, Errors: errs})
			continue
		}
		set.Files = append(set.Files, f)
		set.Namespaces = append(set.Namespaces, namespaces[i])
		kept[i] = srcs[i]
	}
	switch {
	case spec.Strict && len(set.Skipped) > 0:
		return nil, &Error{Files: set.Skipped, Reason: "strict: every rule file must compile"}
	case len(set.Files) == 0:
		return nil, &Error{Files: set.Skipped, Reason: fmt.Sprintf("none of the %d rule files compiled", len(files))}
	}
	rules, _, err := compileAll(set.Files, set.Namespaces, externals, builtin, spec.Builtin)
	if err != nil {
		return nil, err
	}
	return set.finish(rules, kept, namespaces, builtin, spec.Builtin), nil
}

// finish sets the compiled rules, their count and the digest of the
// sources that went in (srcs[i] nil for a file left out).
func (set *Set) finish(rules *yara.Rules, srcs [][]byte, namespaces, builtinNS []string, builtin map[string]string) *Set {
	h := sha256.New()
	for i, src := range srcs {
		if src == nil {
			continue
		}
		fmt.Fprintf(h, "%s\x00%d\x00", namespaces[i], len(src))
		h.Write(src)
	}
	for _, ns := range builtinNS {
		fmt.Fprintf(h, "%s\x00%d\x00%s", ns, len(builtin[ns]), builtin[ns])
	}
	set.Rules = rules
	set.RuleCount = len(rules.GetRules())
	set.Digest = hex.EncodeToString(h.Sum(nil))
	return set
}

// Externals returns DefaultExternals (empty strings) overlaid with extra.
func Externals(extra map[string]any) map[string]any {
	out := make(map[string]any, len(DefaultExternals)+len(extra))
	for _, name := range DefaultExternals {
		out[name] = ""
	}
	for k, v := range extra {
		out[k] = v
	}
	return out
}

func newCompiler(externals map[string]any) (*yara.Compiler, error) {
	c, err := yara.NewCompiler()
	if err != nil {
		return nil, fmt.Errorf("yara compiler: %w", err)
	}
	names := make([]string, 0, len(externals))
	for k := range externals {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		if err := c.DefineVariable(k, externals[k]); err != nil {
			c.Destroy()
			return nil, fmt.Errorf("external variable %q = %v: %w", k, externals[k], err)
		}
	}
	return c, nil
}

// compileAlone compiles one file on a compiler of its own and returns all
// of its errors (go-yara's AddFile returns only the last one; Errors holds
// every one, with its line).
func compileAlone(file, namespace string, externals map[string]any) (errs, warns []Diagnostic) {
	c, err := newCompiler(externals)
	if err != nil {
		return []Diagnostic{{File: file, Message: err.Error()}}, nil
	}
	defer c.Destroy()
	f, err := os.Open(file)
	if err != nil {
		return []Diagnostic{{File: file, Message: err.Error()}}, nil
	}
	defer f.Close()
	addErr := c.AddFile(f, namespace)
	for _, m := range c.Errors {
		errs = append(errs, diagnostic(file, m))
	}
	for _, m := range c.Warnings {
		warns = append(warns, diagnostic(file, m))
	}
	if addErr != nil && len(errs) == 0 {
		errs = append(errs, Diagnostic{File: file, Message: addErr.Error()})
	}
	return errs, warns
}

func diagnostic(file string, m yara.CompilerMessage) Diagnostic {
	// An error inside an included file names that file.
	if m.Filename != "" {
		file = m.Filename
	}
	return Diagnostic{File: file, Line: m.Line, Message: m.Text}
}

// compileAll compiles the files together, each in its namespace, and the
// built-in sources. An error means some file failed (the compiler stops
// at the first): the caller falls back to compiling each file alone.
func compileAll(files, namespaces []string, externals map[string]any, builtinNS []string, builtin map[string]string) (*yara.Rules, []Diagnostic, error) {
	c, err := newCompiler(externals)
	if err != nil {
		return nil, nil, err
	}
	defer c.Destroy()
	for _, ns := range builtinNS {
		if err := c.AddString(builtin[ns], ns); err != nil {
			return nil, nil, fmt.Errorf("yara rules: built-in namespace %s: %w", ns, err)
		}
	}
	for i, file := range files {
		f, err := os.Open(file)
		if err != nil {
			return nil, nil, fmt.Errorf("yara rules: %w", err)
		}
		err = c.AddFile(f, namespaces[i])
		f.Close()
		if err != nil {
			var diags []string
			for _, m := range c.Errors {
				diags = append(diags, diagnostic(file, m).String())
			}
			return nil, nil, &Error{Reason: fmt.Sprintf("%s failed to compile (it compiled alone a moment ago, so it changed while loading): %s", file, strings.Join(diags, "; "))}
		}
	}
	var warns []Diagnostic
	for _, m := range c.Warnings {
		warns = append(warns, diagnostic(m.Filename, m))
	}
	rules, err := c.GetRules()
	if err != nil {
		return nil, nil, fmt.Errorf("yara rules: %w", err)
	}
	return rules, warns, nil
}

// Resolve expands Spec.Paths into rule files, each with a namespace (its
// path below the directory that contributed it, without the extension, or
// its base name), and stamps them. A path that names nothing is an *Error
// naming its index.
func Resolve(paths []string) (files, namespaces []string, stamps map[string]Stamp, err error) {
	perr := &Error{Paths: map[int]string{}}
	seen := map[string]bool{}
	usedNS := map[string]int{}
	stamps = map[string]Stamp{}
	add := func(file, ns string) {
		if seen[file] {
			return
		}
		seen[file] = true
		ns = strings.TrimSuffix(filepath.ToSlash(ns), filepath.Ext(ns))
		usedNS[ns]++
		if n := usedNS[ns]; n > 1 {
			ns = fmt.Sprintf("%s~%d", ns, n)
		}
		files = append(files, file)
		namespaces = append(namespaces, ns)
	}
	if len(paths) == 0 {
		return nil, nil, nil, &Error{Reason: "no rule paths given"}
	}
	for i, p := range paths {
		matches := []string{p}
		if strings.ContainsAny(p, "*?[") {
			m, gerr := filepath.Glob(p)
			if gerr != nil {
				perr.Paths[i] = fmt.Sprintf("bad glob %q: %v", p, gerr)
				continue
			}
			if len(m) == 0 {
				perr.Paths[i] = fmt.Sprintf("%s matches no file", p)
				continue
			}
			matches = m
		}
		before := len(files)
		for _, m := range matches {
			fi, serr := os.Stat(m)
			if serr != nil {
				perr.Paths[i] = serr.Error()
				break
			}
			if !fi.IsDir() {
				stamps[m] = Stamp{ModTime: fi.ModTime().UnixNano(), Size: fi.Size()}
				add(m, filepath.Base(m))
				continue
			}
			werr := filepath.WalkDir(m, func(path string, d fs.DirEntry, err error) error {
				if err != nil {
					return err
				}
				if !d.IsDir() && !hasRuleExt(path) {
					return nil
				}
				info, err := d.Info()
				if err != nil {
					return err
				}
				// A directory's stamp changes when a file is added,
				// removed or renamed in it.
				stamps[path] = Stamp{ModTime: info.ModTime().UnixNano(), Size: info.Size()}
				if d.IsDir() {
					return nil
				}
				rel, err := filepath.Rel(m, path)
				if err != nil {
					return err
				}
				add(path, rel)
				return nil
			})
			if werr != nil {
				perr.Paths[i] = werr.Error()
				break
			}
		}
		if _, bad := perr.Paths[i]; !bad && len(files) == before && !allSeen(matches, seen) {
			perr.Paths[i] = fmt.Sprintf("%s holds no rule files (%s)", p, strings.Join(Extensions, ", "))
		}
	}
	if len(perr.Paths) > 0 {
		return nil, nil, nil, perr
	}
	return files, namespaces, stamps, nil
}

// allSeen reports whether every match was a file already taken from an
// earlier path (not a fault: the same file named twice loads once).
func allSeen(matches []string, seen map[string]bool) bool {
	for _, m := range matches {
		if !seen[m] {
			return false
		}
	}
	return true
}

func hasRuleExt(p string) bool {
	ext := strings.ToLower(filepath.Ext(p))
	for _, e := range Extensions {
		if ext == e {
			return true
		}
	}
	return false
}
