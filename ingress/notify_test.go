package ingress

import (
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fedbus/fedbus/bus"
	"github.com/fedbus/fedbus/contract"
	"github.com/fedbus/fedbus/policy"
	"github.com/fedbus/fedbus/test/testbed"
)

// notifyWorld is a stub world whose ingress takes notifications into a
// real JetStream inbox.
type notifyWorld struct {
	*stubWorld
	js    jetstream.JetStream
	nc    *nats.Conn
	inbox jetstream.Stream
}

// newNotifyWorld builds it; cfgf changes the configuration first.
func newNotifyWorld(tb testing.TB, cfgf func(*Config)) *notifyWorld {
	tb.Helper()
	ns, err := testbed.StartNATS(tb.TempDir())
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	nc := connect(tb, ns)
	js, err := jetstream.New(nc)
	if err != nil {
		tb.Fatal(err)
	}
	w := &notifyWorld{stubWorld: &stubWorld{ca: newCA(tb, "stub CA")}, js: js, nc: nc}
	w.certA = issue(tb, w.ca, testbed.LeafOptions{}, infraA)
	pol, err := policy.New(contract.AllowAll, nil)
	if err != nil {
		tb.Fatal(err)
	}
	cfg := NewConfig()
	cfg.Components, cfg.RequestTimeout, cfg.MaxBodyBytes = []string{"brig", "galley"}, 5*time.Second, 64
	cfg.OriginRate, cfg.OriginBurst, cfg.OriginConcurrency = 0, 0, 0
	cfg.InboxDuplicates = time.Second
	if cfgf != nil {
		cfgf(&cfg)
	}
	w.in, err = newIngress(cfg, Deps{Policy: pol, Certs: w.ca.CertStore(tb, w.certA), Logger: testLogger(tb), NATS: nc, JetStream: js}, stubResolver{},
		func(context.Context, *nats.Msg) (bus.Event, error) {
			return bus.Event{}, contract.Errorf(contract.LabelComponentUnavailable, "no requests here")
		})
	if err != nil {
		tb.Fatal(err)
	}
	if _, err := w.in.inboxReady(context.Background()); err != nil {
		tb.Fatal(err)
	}
	if w.inbox, err = js.Stream(context.Background(), cfg.InboxStream); err != nil {
		tb.Fatal(err)
	}
	return w
}

// notification sends one notification from originA.
func (w *notifyWorld) notification(tb testing.TB, rpc, id string, seq uint64, epoch string, body string) (*http.Response, *contract.Error) {
	tb.Helper()
	h := http.Header{contract.HTTPOriginDomain: {originA}, contract.HTTPNotificationID: {id}}
	if seq > 0 {
		h.Set(contract.HTTPNotificationSeq, strconv.FormatUint(seq, 10))
		h.Set(contract.HTTPNotificationEpoch, epoch)
	}
	res, e := serve(tb, w.in, newRequest("POST", "/federation/galley/"+rpc, h, []byte(body), w.trusted(w.certA.Cert)))
	return res.Result(), e
}

// stored returns the ids of the notifications in the inbox, in order.
func (w *notifyWorld) stored(tb testing.TB) []string {
	tb.Helper()
	var ids []string
	for seq := uint64(1); ; {
		m, err := w.inbox.GetMsg(context.Background(), seq, jetstream.WithGetMsgSubject("fed.inbox.>"))
		if err != nil {
			return ids
		}
		ids = append(ids, m.Header.Get(contract.HeaderID))
		seq = m.Sequence + 1
	}
}

func TestStoreNotification(t *testing.T) {
	w := newNotifyWorld(t, nil)
	res, e := w.notification(t, "on-x", "n1", 0, "", `{"a":1}`)
	if e != nil {
		t.Fatal(e)
	}
	if res.Header.Get(contract.HTTPBatchMaxEntries) != "1000" || res.Header.Get(contract.HTTPBatchMaxBytes) == "" {
		t.Fatalf("batches not announced: %v", res.Header)
	}
	m, err := w.inbox.GetMsg(context.Background(), 1)
	if err != nil {
		t.Fatal(err)
	}
	h := m.Header
	if m.Subject != "fed.inbox.galley.on-x.a.example.com" || h.Get(contract.HeaderType) != contract.TypeNotification ||
		h.Get(contract.HeaderID) != "n1" || h.Get(contract.HeaderMsgID) != originA+"/n1" || h.Get(contract.HeaderOriginDomain) != originA ||
		h.Get(contract.HeaderSource) != "//a.example.com/galley" || string(m.Data) != `{"a":1}` {
		t.Fatalf("stored %s %v %s", m.Subject, h, m.Data)
	}
	// The same notification again (its answer was lost): 200, stored once.
	if _, e := w.notification(t, "on-x", "n1", 0, "", `{"a":1}`); e != nil {
		t.Fatal(e)
	}
	if got := w.stored(t); len(got) != 1 {
		t.Fatalf("stored %v", got)
	}
	refused := []struct {
		name, id, rpc string
		want          string
	}{
		{"id with a space", "a b", "on-x", contract.LabelInvalidRequest},
		{"id too long", strings.Repeat("i", 129), "on-x", contract.LabelInvalidRequest},
		{"unknown component", "n2", "", contract.LabelUnknownComponent},
	}
	for _, tc := range refused {
		t.Run(tc.name, func(t *testing.T) {
			path := "/federation/galley/" + tc.rpc
			if tc.rpc == "" {
				path = "/federation/chat/on-x"
			}
			h := http.Header{contract.HTTPOriginDomain: {originA}, contract.HTTPNotificationID: {tc.id}}
			_, e := serve(t, w.in, newRequest("POST", path, h, []byte(`{}`), w.trusted(w.certA.Cert)))
			if e == nil || e.Label != tc.want {
				t.Fatalf("got %v, want %s", e, tc.want)
			}
		})
	}
	if got := w.stored(t); len(got) != 1 {
		t.Fatalf("refused notifications stored: %v", got)
	}
}

// TestNotificationMarks: a fedbus sender's notification sent again after
// the duplicate window is still recognised by the origin's mark; one of
// another epoch (the sender's stream was made again) is stored.
func TestNotificationMarks(t *testing.T) {
	w := newNotifyWorld(t, nil)
	for i, id := range []string{"n1", "n2", "n3"} {
		if _, e := w.notification(t, "on-x", id, uint64(10+i), "e1", `{}`); e != nil {
			t.Fatal(e)
		}
	}
	time.Sleep(1500 * time.Millisecond) // past the inbox's duplicate window of 1s
	if _, e := w.notification(t, "on-x", "n2", 11, "e1", `{}`); e != nil {
		t.Fatal(e)
	}
	if got := w.stored(t); strings.Join(got, ",") != "n1,n2,n3" {
		t.Fatalf("after a late copy: %v", got)
	}
	if _, e := w.notification(t, "on-x", "m1", 1, "e2", `{}`); e != nil {
		t.Fatal(e)
	}
	if got := w.stored(t); strings.Join(got, ",") != "n1,n2,n3,m1" {
		t.Fatalf("after a new epoch: %v", got)
	}
}

// batch sends a batch from originA and returns the answer.
func (w *notifyWorld) batch(tb testing.TB, body []byte) (*contract.BatchResponse, *contract.Error) {
	tb.Helper()
	h := http.Header{contract.HTTPOriginDomain: {originA}}
	res, e := serve(tb, w.in, newRequest("POST", contract.BatchPath, h, body, w.trusted(w.certA.Cert)))
	if e != nil {
		return nil, e
	}
	var br contract.BatchResponse
	if err := json.Unmarshal(res.Body.Bytes(), &br); err != nil {
		tb.Fatalf("batch answer %s: %v", res.Body.Bytes(), err)
	}
	return &br, nil
}

func TestNotificationBatch(t *testing.T) {
	w := newNotifyWorld(t, nil)
	entry := func(id, component, rpc string, seq uint64, body string) contract.BatchEntry {
		e := contract.BatchEntry{ID: id, Component: component, RPC: rpc, Seq: seq}
		e.SetBody([]byte(body))
		return e
	}
	b := contract.Batch{Epoch: "e1", Notifications: []contract.BatchEntry{
		entry("n1", "galley", "on-x", 1, `{"a":1}`),
		entry("n2", "chat", "on-x", 2, `{}`),
		entry("n3", "galley", "on x", 3, `{}`),
		entry("n4", "galley", "on-x", 4, `"`+strings.Repeat("x", 100)+`"`),
		entry("n 5", "galley", "on-x", 5, `{}`),
		entry("n6", "galley", "on-y", 6, "not json"),
	}}
	body, _ := json.Marshal(b)
	br, e := w.batch(t, body)
	if e != nil {
		t.Fatal(e)
	}
	want := []int{200, 403, 403, 413, 400, 200}
	if len(br.Results) != len(want) {
		t.Fatalf("results %+v", br.Results)
	}
	for i, r := range br.Results {
		if r.Code != want[i] || (r.Code != 200) != (r.Error != nil) {
			t.Fatalf("result %d: %+v, want %d", i, r, want[i])
		}
	}
	if got := w.stored(t); strings.Join(got, ",") != "n1,n6" {
		t.Fatalf("stored %v", got)
	}
	if m, _ := w.inbox.GetMsg(context.Background(), 2); string(m.Data) != "not json" {
		t.Fatalf("base64 body stored as %q", m.Data)
	}
	// Sent again whole (the answer was lost): nothing stored twice.
	if _, e := w.batch(t, body); e != nil {
		t.Fatal(e)
	}
	if got := w.stored(t); len(got) != 2 {
		t.Fatalf("stored after the batch again: %v", got)
	}
	refused := []struct {
		name string
		body string
		want string
	}{
		{"not JSON", `{`, contract.LabelInvalidRequest},
		{"empty", `{"notifications":[]}`, contract.LabelInvalidRequest},
		{"too large", `{"notifications":[` + strings.Repeat(" ", 5<<20) + `]}`, contract.LabelPayloadTooLarge},
	}
	for _, tc := range refused {
		t.Run(tc.name, func(t *testing.T) {
			if _, e := w.batch(t, []byte(tc.body)); e == nil || e.Label != tc.want {
				t.Fatalf("got %v, want %s", e, tc.want)
			}
		})
	}
}

// TestNotificationBatchStopsWhenTheInboxIsFull: the entry that does not fit
// gets 507, the ones after it are not handled (the sender sends them again
// later, in order).
func TestNotificationBatchStopsWhenTheInboxIsFull(t *testing.T) {
	w := newNotifyWorld(t, func(c *Config) { c.InboxMaxBytes = 4096; c.MaxBodyBytes = 1 << 20 })
	var entries []contract.BatchEntry
	for i := range 20 {
		e := contract.BatchEntry{ID: "n" + strconv.Itoa(i), Component: "galley", RPC: "on-x"}
		e.SetBody([]byte(`"` + strings.Repeat("x", 400) + `"`))
		entries = append(entries, e)
	}
	body, _ := json.Marshal(contract.Batch{Notifications: entries})
	br, e := w.batch(t, body)
	if e != nil {
		t.Fatal(e)
	}
	last := br.Results[len(br.Results)-1]
	if len(br.Results) >= 20 || last.Code != http.StatusInsufficientStorage || last.Error.Label != contract.LabelStoreFull {
		t.Fatalf("results %+v", br.Results)
	}
	if got := w.stored(t); len(got) != len(br.Results)-1 {
		t.Fatalf("stored %d, %d results", len(got), len(br.Results))
	}
}

// TestContactSignal: an authenticated request tells the federators that
// its origin contacted us, at most once a second.
func TestContactSignal(t *testing.T) {
	w := newNotifyWorld(t, nil)
	got := make(chan string, 10)
	sub, err := w.nc.Subscribe("fed.contact.>", func(m *nats.Msg) { got <- m.Subject })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	if err := w.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if _, e := w.notification(t, "on-x", "n"+strconv.Itoa(i), 0, "", `{}`); e != nil {
			t.Fatal(e)
		}
	}
	if err := w.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	select {
	case s := <-got:
		if s != "fed.contact.a.example.com" {
			t.Fatalf("signal on %s", s)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no contact signal")
	}
	time.Sleep(100 * time.Millisecond) // a second signal would arrive by now
	if len(got) != 0 {
		t.Fatalf("%d more signals within a second", len(got))
	}
}

func TestNotificationsWithoutJetStream(t *testing.T) {
	w := newStubWorld(t, 64, nil)
	h := http.Header{contract.HTTPOriginDomain: {originA}, contract.HTTPNotificationID: {"n1"}}
	if _, e := serve(t, w.in, newRequest("POST", "/federation/galley/on-x", h, []byte(`{}`), w.trusted(w.certA.Cert))); e == nil || e.Label != contract.LabelComponentUnavailable {
		t.Fatalf("notification without JetStream: %v", e)
	}
	h.Del(contract.HTTPNotificationID)
	if _, e := serve(t, w.in, newRequest("POST", contract.BatchPath, h, []byte(`{}`), w.trusted(w.certA.Cert))); e == nil || e.Label != contract.LabelInvalidEndpoint {
		t.Fatalf("batch without JetStream: %v", e)
	}
}
