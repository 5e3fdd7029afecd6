package config

import (
	"fmt"
	"regexp"
	"slices"
	"strings"
)

// Reserved are variables of the contract that this version does not use
// yet: setting one is not a mistake, but it changes nothing (a warning).
// A variable that a Config gains stops being reserved by itself.
var Reserved []string

// serviceLink matches the variables Kubernetes adds to every container for
// each Service of its namespace (docker links use the same form): a
// Service named "fed" gives FED_SERVICE_HOST, FED_PORT_8443_TCP, ... They
// are not fedbus variables and not mistakes.
var serviceLink = regexp.MustCompile(`^FED_(SERVICE_HOST|SERVICE_PORT(_[A-Z0-9_]+)?|PORT(_[0-9]+_(TCP|UDP|SCTP)(_[A-Z]+)?)?)$`)

// CheckEnviron looks at the FED_* variables of environ ("NAME=value"
// entries, as os.Environ returns them) that are not in known. One that is
// close to a known name (a typo: FED_ALLOW_LIS, fed_domain) is an error
// that names the variable meant; one of Reserved, or one unlike any, is a
// warning (it changes nothing). Kubernetes' service-link variables are
// ignored.
func CheckEnviron(environ []string, known []string) (errs []error, warnings []string) {
	isKnown := make(map[string]bool, len(known))
	for _, k := range known {
		isKnown[k] = true
	}
	var names []string
	for _, kv := range environ {
		name, _, _ := strings.Cut(kv, "=")
		if !strings.HasPrefix(strings.ToUpper(name), "FED_") || isKnown[name] || serviceLink.MatchString(name) {
			continue
		}
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range slices.Compact(names) {
		switch {
		case slices.Contains(Reserved, name):
			warnings = append(warnings, fmt.Sprintf("%s is not used by this version of fedbus (the contract reserves it): it changes nothing", name))
		case closest(name, known) != "":
			errs = append(errs, fmt.Errorf("%s is not a fedbus variable: did you mean %s?", name, closest(name, known)))
		default:
			warnings = append(warnings, fmt.Sprintf("%s is not a fedbus variable: ignored (-h lists the variables)", name))
		}
	}
	return errs, warnings
}

// closest returns the known name that name is a typo of (case aside, at
// most two edits away), or "".
func closest(name string, known []string) string {
	best, bestDist := "", 3
	up := strings.ToUpper(name)
	for _, k := range known {
		if d := distance(up, k); d < bestDist {
			best, bestDist = k, d
		}
	}
	return best
}

// distance is the Levenshtein distance of a and b (bytes: variable names
// are ASCII).
func distance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
