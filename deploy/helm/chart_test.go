// Package helm holds the test of the fedbus Helm chart (deploy/helm/fedbus),
// a Go module of its own so that fedbus does not depend on Helm:
// helm lint --strict and helm template with the documented values, run
// with Helm as a library.
package helm

import (
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
	"helm.sh/helm/v3/pkg/action"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/lint/support"
)

const (
	chartDir      = "fedbus"
	exampleValues = "fedbus/ci/example-values.yaml"
)

func values(t *testing.T) map[string]any {
	t.Helper()
	v, err := chartutil.ReadValuesFile(exampleValues)
	if err != nil {
		t.Fatal(err)
	}
	return v.AsMap()
}

// TestLintStrict is helm lint --strict with the documented values.
func TestLintStrict(t *testing.T) {
	res := (&action.Lint{Strict: true, Namespace: "fedbus"}).Run([]string{chartDir}, values(t))
	for _, err := range res.Errors {
		t.Errorf("lint: %v", err)
	}
	for _, m := range res.Messages {
		if m.Severity >= support.WarningSev { // --strict: warnings fail, as errors do
			t.Errorf("lint: %s", m)
		}
	}
}

// render is helm template with vals.
func render(t *testing.T, vals map[string]any) ([]map[string]any, error) {
	t.Helper()
	ch, err := loader.Load(chartDir)
	if err != nil {
		t.Fatal(err)
	}
	install := action.NewInstall(&action.Configuration{})
	install.DryRun, install.ClientOnly, install.Replace = true, true, true
	install.ReleaseName, install.Namespace = "fedbus-a", "fedbus"
	install.APIVersions = chartutil.VersionSet{"monitoring.coreos.com/v1"}
	rel, err := install.Run(ch, vals)
	if err != nil {
		return nil, err
	}
	var docs []map[string]any
	for _, part := range strings.Split(rel.Manifest, "\n---") {
		var doc map[string]any
		if err := yaml.Unmarshal([]byte(part), &doc); err != nil {
			t.Fatalf("manifest part is not YAML: %v\n%s", err, part)
		}
		if doc != nil {
			docs = append(docs, doc)
		}
	}
	return docs, nil
}

// dig returns the value at path in a decoded manifest.
func dig(v any, path ...any) any {
	for _, p := range path {
		switch k := p.(type) {
		case string:
			m, _ := v.(map[string]any)
			v = m[k]
		case int:
			l, _ := v.([]any)
			if k >= len(l) {
				return nil
			}
			v = l[k]
		}
	}
	return v
}

// TestTemplate is helm template with the documented values: the objects
// the README promises, probes on /livez and /readyz, certificates from the
// Secret, the environment of the contract.
func TestTemplate(t *testing.T) {
	docs, err := render(t, values(t))
	if err != nil {
		t.Fatal(err)
	}
	byKind := map[string][]map[string]any{}
	for _, d := range docs {
		k, _ := d["kind"].(string)
		byKind[k] = append(byKind[k], d)
	}
	for kind, n := range map[string]int{"Deployment": 2, "PodDisruptionBudget": 2, "Service": 3, "ServiceMonitor": 1} {
		if len(byKind[kind]) != n {
			t.Errorf("%d %s, want %d", len(byKind[kind]), kind, n)
		}
	}
	for _, d := range byKind["Deployment"] {
		name := dig(d, "metadata", "name")
		c := dig(d, "spec", "template", "spec", "containers", 0)
		if p := dig(c, "livenessProbe", "httpGet", "path"); p != "/livez" {
			t.Errorf("%s liveness probe %v", name, p)
		}
		if p := dig(c, "readinessProbe", "httpGet", "path"); p != "/readyz" {
			t.Errorf("%s readiness probe %v", name, p)
		}
		if s := dig(d, "spec", "template", "spec", "volumes", 0, "secret", "secretName"); s != "fedbus-a-tls" {
			t.Errorf("%s certificates from %v", name, s)
		}
		env := map[string]any{}
		list, _ := dig(c, "env").([]any)
		for _, e := range list {
			env[dig(e, "name").(string)] = dig(e, "value")
		}
		for k, want := range map[string]any{"FED_DOMAIN": "a.example.com", "FED_ALLOW_LIST": "b.example.com", "FED_OPS_ADDR": ":9090", "FED_TLS_CERT": "/certs/tls.crt"} {
			if env[k] != want {
				t.Errorf("%s env %s = %v, want %v", name, k, env[k], want)
			}
		}
	}
}

// TestSchemaRefusesMissingValues: the values schema refuses a chart
// without domain or certificate Secret, naming the value.
func TestSchemaRefusesMissingValues(t *testing.T) {
	for _, tc := range []struct {
		name, key, want string
	}{
		{"no domain", "domain", "domain"},
		{"bad strategy", "strategy", "strategy"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			vals := values(t)
			if tc.key == "strategy" {
				vals["strategy"] = "allow-some"
			} else {
				delete(vals, tc.key)
			}
			_, err := render(t, vals)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err %v, want one about %s", err, tc.want)
			}
		})
	}
}
