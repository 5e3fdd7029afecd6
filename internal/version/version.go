// Package version is the version of the fedbus binaries: the Version
// variable, set at build time with
//
//	-ldflags "-X github.com/fedbus/fedbus/internal/version.Version=v1.2.3"
//
// (the Makefile and the image build set it from git describe), and the
// version control information the Go toolchain records in the binary.
package version

import (
	"fmt"
	"regexp"
	"runtime"
	"runtime/debug"
	"strings"
)

// Version is the release of the binary; "dev" when the build did not set
// it.
var Version = "dev"

// Info is what a binary knows of its build.
type Info struct {
	Version  string // Version
	Revision string // VCS commit, "" when unknown
	Modified bool   // built from a working tree with changes
	Go       string // Go toolchain, e.g. go1.26.0
}

// Get returns the build information of the running binary.
func Get() Info {
	in := Info{Version: Version, Go: runtime.Version()}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return in
	}
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			in.Revision = s.Value
		case "vcs.modified":
			in.Modified = s.Value == "true"
		}
	}
	return in
}

// String formats the information for -version and the start-up line:
// "v1.2.3 (commit 0123456789ab, go1.26.0)", "dev (commit 0123456789ab
// modified, go1.26.0)" or "dev (go1.26.0)".
func (in Info) String() string {
	var b strings.Builder
	b.WriteString(in.Version)
	b.WriteString(" (")
	if in.Revision != "" {
		rev := in.Revision
		if len(rev) > 12 {
			rev = rev[:12]
		}
		b.WriteString("commit " + rev)
		if in.Modified {
			b.WriteString(" modified")
		}
		b.WriteString(", ")
	}
	b.WriteString(in.Go + ")")
	return b.String()
}

// String is Get().String().
func String() string { return Get().String() }

// semver is the form of semantic versioning 2.0.0 (an optional leading v
// is allowed and dropped by Semver).
var semver = regexp.MustCompile(`^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)` +
	`(-(0|[1-9]\d*|\d*[A-Za-z-][0-9A-Za-z-]*)(\.(0|[1-9]\d*|\d*[A-Za-z-][0-9A-Za-z-]*))*)?` +
	`(\+[0-9A-Za-z-]+(\.[0-9A-Za-z-]+)*)?$`)

// Semver returns Version as a semantic version (what NATS service
// discovery requires): "v1.2.3" gives "1.2.3", and a version that is not
// one ("dev", a bare commit) gives "0.0.0-" followed by it, made safe.
func Semver() string {
	v := strings.TrimPrefix(Version, "v")
	if semver.MatchString(v) {
		return v
	}
	safe := strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '.' {
			return r
		}
		return '-'
	}, Version)
	safe = strings.Trim(strings.ReplaceAll(safe, "..", "."), ".")
	if safe == "" {
		safe = "dev"
	}
	out := "0.0.0-" + safe
	if !semver.MatchString(out) {
		return "0.0.0-dev"
	}
	return out
}

// Line is the -version output of a program: "<prog> <String()>".
func Line(prog string) string { return fmt.Sprintf("%s %s", prog, String()) }
