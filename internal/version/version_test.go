package version

import (
	"strings"
	"testing"
)

func TestSemver(t *testing.T) {
	tests := []struct{ version, want string }{
		{"v1.2.3", "1.2.3"},
		{"1.2.3-rc.1", "1.2.3-rc.1"},
		{"v0.1.0-5-gabc1234-dirty", "0.1.0-5-gabc1234-dirty"},
		{"dev", "0.0.0-dev"},
		{"eccb74b-dirty", "0.0.0-eccb74b-dirty"},
		{"0123abc", "0.0.0-0123abc"},
		{"01", "0.0.0-dev"}, // a numeric identifier with a leading zero is no semver
		{"feature/x y", "0.0.0-feature-x-y"},
		{"", "0.0.0-dev"},
	}
	old := Version
	t.Cleanup(func() { Version = old })
	for _, tt := range tests {
		Version = tt.version
		if got := Semver(); got != tt.want || !semver.MatchString(got) {
			t.Errorf("Semver() of %q = %q, want %q", tt.version, got, tt.want)
		}
	}
}

func TestString(t *testing.T) {
	tests := []struct {
		in   Info
		want string
	}{
		{Info{Version: "v1.2.3", Revision: "0123456789abcdef0123", Go: "go1.26.0"}, "v1.2.3 (commit 0123456789ab, go1.26.0)"},
		{Info{Version: "dev", Revision: "0123456789abcdef0123", Modified: true, Go: "go1.26.0"}, "dev (commit 0123456789ab modified, go1.26.0)"},
		{Info{Version: "dev", Go: "go1.26.0"}, "dev (go1.26.0)"},
	}
	for _, tt := range tests {
		if got := tt.in.String(); got != tt.want {
			t.Errorf("got %q, want %q", got, tt.want)
		}
	}
	if !strings.HasPrefix(Line("federator"), "federator "+Version+" (") {
		t.Errorf("Line: %q", Line("federator"))
	}
}
