package metrics

import (
	"errors"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/fedbus/fedbus/contract"
)

func TestFolding(t *testing.T) {
	m := New([]string{"brig"})
	listed := map[string]bool{"b.example.com": true}
	m.SetListed(func(d string) bool { return listed[d] })
	for _, tc := range []struct{ in, want string }{{"b.example.com", "b.example.com"}, {"c.example.com", OtherDomain}, {"", OtherDomain}} {
		if got := m.Domain(tc.in); got != tc.want {
			t.Errorf("Domain(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
	if m.Component("brig") != "brig" || m.Component("spar") != OtherComponent {
		t.Error("component folding")
	}
	if Outcome(nil) != OutcomeSuccess || Outcome(contract.Errorf(contract.LabelTimeout, "x")) != contract.LabelTimeout || Outcome(errors.New("x")) != contract.LabelServerError {
		t.Error("outcome")
	}
	for i := range 1000 {
		m.Out(string(rune('a'+i%26))+".example.org", "brig", nil, time.Millisecond)
		m.Refused(Outbound, "not-a-label")
	}
	if n := testutil.CollectAndCount(m.requestsOut); n != 1 {
		t.Errorf("%d series of requests out, want 1", n)
	}
	if v := testutil.ToFloat64(m.refusals.WithLabelValues(Outbound, "other")); v != 1000 {
		t.Errorf("refusals of unknown labels folded: %v", v)
	}
}

func TestNilRecordsNothing(t *testing.T) {
	var m *Metrics
	m.Out("a.example.com", "brig", nil, time.Second)
	m.In("a.example.com", "brig", nil, time.Second)
	m.InFlight(Inbound, "a.example.com", 1)
	m.Refused(Inbound, contract.LabelFederationDenied)
	m.TLSFailure(Inbound, "other")
	m.DiscoveryLookup(true, LookupHit)
	m.DNSError(true)
	m.RemoteUp("a.example.com", true)
	m.StatusEvent(contract.TypeRemoteUp)
	m.NotificationBacklog("a.example.com", 1, time.Second)
	m.AddPending("x", nil)
	m.SetListed(nil)
}

func TestTLSReasonText(t *testing.T) {
	for msg, want := range map[string]string{
		"http: TLS handshake error from 1.2.3.4:5: tls: failed to verify certificate: x509: certificate signed by unknown authority": "unknown-authority",
		"http: TLS handshake error from 1.2.3.4:5: remote error: tls: bad certificate":                                               "refused",
		"http: TLS handshake error from 1.2.3.4:5: EOF":                                                                              "closed",
		"http: TLS handshake error from 1.2.3.4:5: client sent an HTTP request to an HTTPS server":                                   "protocol",
		"http: TLS handshake error from 1.2.3.4:5: something new":                                                                    "other",
	} {
		if got := TLSReasonText(msg); got != want {
			t.Errorf("TLSReasonText(%q) = %q, want %q", msg, got, want)
		}
	}
}
