package ingress

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/fedbus/fedbus/contract"
)

// FuzzIngressRequest runs ServeHTTP on arbitrary methods, paths, origin
// headers and bodies from a trusted client (a fake verified r.TLS), with a
// stub resolver and a stub NATS exchange that fails on any message a
// well-behaved ingress would not publish. Every request must get exactly
// one response with a status in 200..599, errors as contract JSON, and
// nothing may panic.
func FuzzIngressRequest(f *testing.F) {
	w := newStubWorld(f, 64, nil)
	cs := w.trusted(w.certA.Cert)
	f.Add("POST", "/federation/brig/get-user", originA, []byte(`{}`))
	f.Add("GET", "/federation/brig/get-user", originA, []byte(``))
	f.Add("POST", "/federation/brig/a%2Fb", originA, []byte(`{}`))
	f.Add("POST", "/federation/brig/../x", "A.EXAMPLE.COM", []byte(`{}`))
	f.Add("POST", "/federation/galley/fail", originA, []byte(`{}`))
	f.Add("POST", "/federation/brig/x", "*", []byte(`{}`))
	f.Add("POST", "/federation/brig/x", noSRV, []byte(`{}`))
	f.Add("POST", "/federation/brig/x", originA, []byte(strings.Repeat("x", 65)))
	f.Add("POST", "/federation/brig/x?q", originA, []byte(`{}`))
	f.Fuzz(func(t *testing.T, method, path, originHeader string, body []byte) {
		header := http.Header{}
		if originHeader != "" {
			header[contract.HTTPOriginDomain] = []string{originHeader}
		}
		if _, err := url.ParseRequestURI(path); err != nil {
			return // net/http refuses the request line before any handler
		}
		before := w.published.Load()
		r := newRequest("POST", path, header, body, cs)
		r.Method = method
		res, e := serve(t, w.in, r)
		published := w.published.Load() != before
		if e == nil {
			// Success: the request was valid and published once.
			if !published {
				t.Fatalf("200 without a published message: %s", res.Body.Bytes())
			}
			var echo map[string]string
			if err := json.Unmarshal(res.Body.Bytes(), &echo); err != nil || echo["rpc"] == "" {
				t.Fatalf("success body %s", res.Body.Bytes())
			}
			return
		}
		if e.Code == http.StatusInternalServerError {
			t.Fatalf("server error %s", res.Body.Bytes())
		}
		if published && e.Label != "not-found" {
			t.Fatalf("refused with %s after publishing", e.Label)
		}
		if !published && method == http.MethodPost {
			// A refusal before publishing must be one of the checks.
			switch e.Label {
			case contract.LabelInvalidEndpoint, contract.LabelUnknownComponent, contract.LabelNoOriginDomain,
				contract.LabelDomainParseError, contract.LabelInvalidDomain, contract.LabelDiscoveryFailure,
				contract.LabelTimeout, contract.LabelAuthenticationFailure, contract.LabelPayloadTooLarge:
			default:
				t.Fatalf("unexpected refusal %s", res.Body.Bytes())
			}
		}
	})
}
