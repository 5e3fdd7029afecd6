package setup_test

import (
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// TestOperatorFilesAgree: what an operator reads first points at files
// that exist in the repository, and the image holds the binaries the
// Makefile builds for it, fedctl included, with OCI labels.
func TestOperatorFilesAgree(t *testing.T) {
	read := func(path string) string {
		t.Helper()
		b, err := os.ReadFile("../" + path)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	readme := read("README.md")
	if strings.Contains(readme, "../shared") {
		t.Error("README.md points outside the repository")
	}
	for _, m := range regexp.MustCompile("\\((docs/[^)]+)\\)|`((?:docs|deploy)/[A-Za-z0-9_./-]+\\.(?:md|rst|conf))`").FindAllStringSubmatch(readme, -1) {
		path := m[1] + m[2]
		if _, err := os.Stat("../" + path); err != nil {
			t.Errorf("README.md names %s: %v", path, err)
		}
	}
	copyLine := regexp.MustCompile(`(?m)^COPY (.+) /$`).FindStringSubmatch(read("Dockerfile"))
	cmdsLine := regexp.MustCompile(`(?m)^IMAGE_CMDS\s*:=\s*(.+)$`).FindStringSubmatch(read("Makefile"))
	if copyLine == nil || cmdsLine == nil {
		t.Fatal("no COPY line in Dockerfile or IMAGE_CMDS in Makefile")
	}
	copied, built := strings.Fields(copyLine[1]), strings.Fields(cmdsLine[1])
	slices.Sort(copied)
	slices.Sort(built)
	if !slices.Equal(copied, built) || !slices.Contains(copied, "fedctl") {
		t.Errorf("the image copies %v, the Makefile builds %v; both must hold fedctl", copied, built)
	}
	for _, label := range []string{"org.opencontainers.image.version", "org.opencontainers.image.revision", "org.opencontainers.image.source"} {
		if !strings.Contains(read("Dockerfile"), label) {
			t.Errorf("Dockerfile lacks the label %s", label)
		}
	}
}
