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

// FuzzNotificationBatch posts arbitrary batch bodies from a trusted
// origin to an ingress with a real JetStream inbox. Every request gets one
// answer: a batch answer with at most one result per entry, each 200 or a
// contract error, or a contract error that is not a server error; what is
// stored is a valid inbound notification.
func FuzzNotificationBatch(f *testing.F) {
	w := newNotifyWorld(f, nil)
	cs := w.trusted(w.certA.Cert)
	f.Add([]byte(`{"epoch":"e","notifications":[{"id":"n1","component":"galley","rpc":"on-x","seq":1,"body":{}}]}`))
	f.Add([]byte(`{"notifications":[{"id":"n1","component":"galley","rpc":"on-x","body_base64":"AAEC"},{"id":"n2","component":"brig","rpc":"x"}]}`))
	f.Add([]byte(`{"notifications":[{"id":"","component":"*","rpc":">","body":"x"}]}`))
	f.Add([]byte(`{"notifications":null}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, body []byte) {
		h := http.Header{contract.HTTPOriginDomain: {originA}}
		res, e := serve(t, w.in, newRequest("POST", contract.BatchPath, h, body, cs))
		if e != nil {
			if e.Code >= 500 && e.Label != contract.LabelStoreFull {
				t.Fatalf("server error %s for %q", res.Body.Bytes(), body)
			}
			return
		}
		var b contract.Batch
		if err := json.Unmarshal(body, &b); err != nil {
			t.Fatalf("200 for a body that is not a batch: %q", body)
		}
		var br contract.BatchResponse
		if err := json.Unmarshal(res.Body.Bytes(), &br); err != nil || len(br.Results) > len(b.Notifications) || len(br.Results) == 0 {
			t.Fatalf("answer %s to %q", res.Body.Bytes(), body)
		}
		for i, r := range br.Results {
			if r.Code != http.StatusOK && (r.Error == nil || r.Error.Code != r.Code) {
				t.Fatalf("result %d: %+v", i, r)
			}
		}
	})
}
