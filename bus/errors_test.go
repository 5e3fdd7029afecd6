package bus_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strings"
	"testing"

	"github.com/fedbus/fedbus/bus"
)

func TestStatusOf(t *testing.T) {
	// The contract's table (section 4), plus the two labels fedbus adds.
	tests := []struct {
		label    string
		status   int
		sentinel *bus.Error
	}{
		{"federation-denied", 400, bus.ErrFederationDenied},
		{"invalid-endpoint", 403, bus.ErrInvalidEndpoint},
		{"invalid-request", 400, bus.ErrInvalidRequest},
		{"unknown-component", 403, bus.ErrUnknownComponent},
		{"no-origin-domain", 403, bus.ErrNoOriginDomain},
		{"domain-parse-error", 403, bus.ErrDomainParseError},
		{"no-client-certificate", 403, bus.ErrNoClientCertificate},
		{"authentication-failure", 403, bus.ErrAuthenticationFailure},
		{"invalid-domain", 422, bus.ErrInvalidDomain},
		{"discovery-failure", 400, bus.ErrDiscoveryFailure},
		{"federation-connection-refused", 521, bus.ErrConnectionRefused},
		{"federation-tls-error", 525, bus.ErrTLSError},
		{"federation-remote-error", 533, bus.ErrRemoteError},
		{"federation-timeout", 504, bus.ErrTimeout},
		{"component-unavailable", 503, bus.ErrComponentUnavailable},
		{"payload-too-large", 413, bus.ErrPayloadTooLarge},
		// Not in the contract's table: fedbus additions.
		{"too-many-requests", 429, bus.ErrTooManyRequests},
		{"server-error", 500, nil},
		{"unknown-federation-error", 500, nil},
		{"no-such-label", 500, nil},
		{"", 500, nil},
	}
	for _, tc := range tests {
		t.Run(tc.label, func(t *testing.T) {
			if got := bus.StatusOf(tc.label); got != tc.status {
				t.Errorf("StatusOf(%q) = %d, want %d", tc.label, got, tc.status)
			}
			if tc.sentinel != nil {
				if tc.sentinel.Label != tc.label || tc.sentinel.Code != tc.status {
					t.Errorf("sentinel = %d %q, want %d %q", tc.sentinel.Code, tc.sentinel.Label, tc.status, tc.label)
				}
			}
			e := bus.Errorf(tc.label, "m %d", 1)
			if e.Code != tc.status || e.Label != tc.label || e.Message != "m 1" {
				t.Errorf("Errorf = %+v", e)
			}
		})
	}
}

func TestErrorJSON(t *testing.T) {
	tests := []struct {
		name string
		err  *bus.Error
		want string
	}{
		{"plain", &bus.Error{Code: 403, Label: "invalid-endpoint", Message: "bad rpc"},
			`{"code":403,"label":"invalid-endpoint","message":"bad rpc"}`},
		{"empty message", &bus.Error{Code: 504, Label: "federation-timeout"},
			`{"code":504,"label":"federation-timeout","message":""}`},
		{"quotes and unicode", &bus.Error{Code: 400, Label: "invalid-request", Message: "\"<é>\"\n"},
			`{"code":400,"label":"invalid-request","message":"\"\u003cé\u003e\"\n"}`},
		{"inner", bus.RemoteError(&bus.Error{Code: 422, Label: "invalid-domain", Message: "no SRV"}),
			`{"code":533,"label":"federation-remote-error","message":"the remote backend answered with an error","inner":{"code":422,"label":"invalid-domain","message":"no SRV"}}`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			body := tc.err.JSON()
			if string(body) != tc.want {
				t.Errorf("JSON() = %s\nwant      %s", body, tc.want)
			}
			var back bus.Error
			if err := json.Unmarshal(body, &back); err != nil {
				t.Fatalf("unmarshal: %v", err)
			}
			if !reflect.DeepEqual(&back, tc.err) {
				t.Errorf("round trip = %+v, want %+v", back, tc.err)
			}
			if got := bus.ParseError(500, body); !reflect.DeepEqual(got, tc.err) {
				t.Errorf("ParseError(JSON()) = %+v, want %+v", got, tc.err)
			}
		})
	}
}

func TestErrorString(t *testing.T) {
	e := bus.Errorf(bus.LabelInvalidDomain, "no SRV for %s", "b.example.com")
	if got, want := e.Error(), "invalid-domain (422): no SRV for b.example.com"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	r := bus.RemoteError(e)
	for _, part := range []string{"federation-remote-error (533)", "invalid-domain (422)", "no SRV for b.example.com"} {
		if !strings.Contains(r.Error(), part) {
			t.Errorf("Error() = %q, missing %q", r.Error(), part)
		}
	}
}

func TestParseError(t *testing.T) {
	long := bytes.Repeat([]byte("x"), 1000)
	long[0] = '<'
	tests := []struct {
		name   string
		status int
		body   []byte
		want   *bus.Error
	}{
		{"contract body", 403, []byte(`{"code":403,"label":"authentication-failure","message":"no SAN matches"}`),
			&bus.Error{Code: 403, Label: "authentication-failure", Message: "no SAN matches"}},
		{"contract body keeps its own code", 500, []byte(`{"code":422,"label":"invalid-domain","message":"m"}`),
			&bus.Error{Code: 422, Label: "invalid-domain", Message: "m"}},
		{"contract body with inner", 533, []byte(`{"code":533,"label":"federation-remote-error","message":"r","inner":{"code":404,"label":"not-found","message":"n"}}`),
			&bus.Error{Code: 533, Label: "federation-remote-error", Message: "r", Inner: &bus.Error{Code: 404, Label: "not-found", Message: "n"}}},
		{"wire-server label not in table", 404, []byte(`{"code":404,"label":"not-found","message":"no user"}`),
			&bus.Error{Code: 404, Label: "not-found", Message: "no user"}},
		{"HTML", 502, []byte("<html><body>Bad Gateway</body></html>"),
			&bus.Error{Code: 502, Label: "unknown-federation-error", Message: "<html><body>Bad Gateway</body></html>"}},
		{"empty", 500, nil,
			&bus.Error{Code: 500, Label: "unknown-federation-error", Message: ""}},
		{"1000 bytes truncated to 200", 503, long,
			&bus.Error{Code: 503, Label: "unknown-federation-error", Message: string(long[:200])}},
		{"JSON without label", 400, []byte(`{"code":400,"message":"m"}`),
			&bus.Error{Code: 400, Label: "unknown-federation-error", Message: `{"code":400,"message":"m"}`}},
		{"JSON without code", 418, []byte(`{"label":"x","message":"m"}`),
			&bus.Error{Code: 418, Label: "unknown-federation-error", Message: `{"label":"x","message":"m"}`}},
		{"JSON code as string", 400, []byte(`{"code":"400","label":"x"}`),
			&bus.Error{Code: 400, Label: "unknown-federation-error", Message: `{"code":"400","label":"x"}`}},
		{"JSON array", 500, []byte(`[1,2]`),
			&bus.Error{Code: 500, Label: "unknown-federation-error", Message: `[1,2]`}},
		{"JSON null", 500, []byte(`null`),
			&bus.Error{Code: 500, Label: "unknown-federation-error", Message: `null`}},
		{"plain text", 429, []byte("slow down"),
			&bus.Error{Code: 429, Label: "unknown-federation-error", Message: "slow down"}},
		{"code below 100", 502, []byte(`{"code":99,"label":"x","message":"m"}`),
			&bus.Error{Code: 502, Label: "unknown-federation-error", Message: `{"code":99,"label":"x","message":"m"}`}},
		{"code above 599", 502, []byte(`{"code":600,"label":"x","message":"m"}`),
			&bus.Error{Code: 502, Label: "unknown-federation-error", Message: `{"code":600,"label":"x","message":"m"}`}},
		{"label not [a-z0-9-]", 404, []byte(`{"code":404,"label":"Not Found","message":"m"}`),
			&bus.Error{Code: 404, Label: "unknown-federation-error", Message: `{"code":404,"label":"Not Found","message":"m"}`}},
		{"invalid inner", 533, []byte(`{"code":533,"label":"federation-remote-error","message":"r","inner":{"code":0,"label":""}}`),
			&bus.Error{Code: 533, Label: "unknown-federation-error", Message: `{"code":533,"label":"federation-remote-error","message":"r","inner":{"code":0,"label":""}}`}},
		{"inner nested 4 deep", 533, nestedErrorBody(4), nestedError(4)},
		{"inner nested 5 deep refused", 533, nestedErrorBody(5),
			&bus.Error{Code: 533, Label: "unknown-federation-error", Message: string(nestedErrorBody(5)[:200])}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := bus.ParseError(tc.status, tc.body)
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("ParseError(%d, %.40q) = %+v, want %+v", tc.status, tc.body, got, tc.want)
			}
			if len(got.Message) > 200 && got.Label == bus.LabelUnknownError {
				t.Errorf("message of %d bytes, want at most 200", len(got.Message))
			}
		})
	}
}

// nestedError returns a federation-remote-error with depth inner errors.
func nestedError(depth int) *bus.Error {
	e := &bus.Error{Code: 404, Label: "not-found", Message: "leaf"}
	for range depth {
		e = &bus.Error{Code: 533, Label: bus.LabelRemoteError, Message: "r", Inner: e}
	}
	return e
}

func nestedErrorBody(depth int) []byte { return nestedError(depth).JSON() }

func TestErrorSanitized(t *testing.T) {
	tests := []struct {
		name string
		err  *bus.Error
		same bool
	}{
		{"contract error", bus.Errorf(bus.LabelInvalidDomain, "x"), true},
		{"wire-server label", &bus.Error{Code: 404, Label: "not-found", Message: "m"}, true},
		{"remote error", bus.RemoteError(bus.Errorf(bus.LabelTimeout, "t")), true},
		{"zero code", &bus.Error{Label: "x"}, false},
		{"code 600", &bus.Error{Code: 600, Label: "x"}, false},
		{"empty label", &bus.Error{Code: 400}, false},
		{"label with space", &bus.Error{Code: 400, Label: "bad label"}, false},
		{"label upper case", &bus.Error{Code: 400, Label: "Bad"}, false},
		{"invalid inner", &bus.Error{Code: 533, Label: bus.LabelRemoteError, Inner: &bus.Error{Code: 1, Label: "x"}}, false},
		{"too deep", nestedError(5), false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := tc.err.Sanitized()
			if tc.same {
				if got != tc.err {
					t.Errorf("Sanitized() = %+v, want the error itself", got)
				}
				return
			}
			if got.Label != bus.LabelServerError || got.Code != 500 || got.Inner != nil {
				t.Errorf("Sanitized() = %+v, want a server-error", got)
			}
			if again := bus.AsError(tc.err); again.Label != bus.LabelServerError {
				t.Errorf("AsError = %+v, want a server-error", again)
			}
		})
	}
}

func TestRemoteError(t *testing.T) {
	tests := []struct {
		name      string
		inner     *bus.Error
		wantLabel string
		wantCode  int
	}{
		{"remote timeout stays timeout", bus.Errorf(bus.LabelTimeout, "component slow"), bus.LabelTimeout, 504},
		{"remote denied", bus.Errorf(bus.LabelFederationDenied, "not allowed"), bus.LabelRemoteError, 533},
		{"remote unknown body", bus.ParseError(502, []byte("<html>")), bus.LabelRemoteError, 533},
		{"remote remote-error", bus.RemoteError(bus.Errorf(bus.LabelInvalidDomain, "x")), bus.LabelRemoteError, 533},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := bus.RemoteError(tc.inner)
			if e.Label != tc.wantLabel || e.Code != tc.wantCode {
				t.Errorf("RemoteError = %d %s, want %d %s", e.Code, e.Label, tc.wantCode, tc.wantLabel)
			}
			if e.Inner != tc.inner {
				t.Errorf("Inner = %+v, want %+v", e.Inner, tc.inner)
			}
			if e.Message == "" {
				t.Error("empty message")
			}
		})
	}
}

func TestErrorIs(t *testing.T) {
	denied := bus.Errorf(bus.LabelFederationDenied, "b.example.com not allowed")
	remote := bus.RemoteError(bus.Errorf(bus.LabelInvalidDomain, "no SRV"))
	tests := []struct {
		name   string
		err    error
		target error
		want   bool
	}{
		{"same sentinel", bus.ErrTimeout, bus.ErrTimeout, true},
		{"same label, other message", denied, bus.ErrFederationDenied, true},
		{"two errors of one label", denied, bus.Errorf(bus.LabelFederationDenied, "other"), true},
		{"other label", denied, bus.ErrInvalidDomain, false},
		{"wrapped once", fmt.Errorf("x: %w", denied), bus.ErrFederationDenied, true},
		{"wrapped twice", fmt.Errorf("y: %w", fmt.Errorf("x: %w", denied)), bus.ErrFederationDenied, true},
		{"wrapped other label", fmt.Errorf("x: %w", denied), bus.ErrTimeout, false},
		{"joined", errors.Join(io.EOF, denied), bus.ErrFederationDenied, true},
		{"not wrapped with %v", fmt.Errorf("x: %v", denied), bus.ErrFederationDenied, false},
		{"plain error", io.EOF, bus.ErrFederationDenied, false},
		{"bus error is not io.EOF", denied, io.EOF, false},
		{"remote error matches outer label", remote, bus.ErrRemoteError, true},
		// errors.Is looks at the outer label only: the inner error is the
		// remote's body, not part of the chain.
		{"remote error does not match inner label", remote, bus.ErrInvalidDomain, false},
		{"remote timeout", bus.RemoteError(bus.Errorf(bus.LabelTimeout, "t")), bus.ErrTimeout, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := errors.Is(tc.err, tc.target); got != tc.want {
				t.Errorf("errors.Is(%v, %v) = %v, want %v", tc.err, tc.target, got, tc.want)
			}
		})
	}
	t.Run("errors.As through wrapping", func(t *testing.T) {
		var e *bus.Error
		if !errors.As(fmt.Errorf("x: %w", denied), &e) || e != denied {
			t.Errorf("errors.As = %v", e)
		}
	})
}

func TestAsError(t *testing.T) {
	denied := bus.Errorf(bus.LabelFederationDenied, "no")
	tests := []struct {
		name      string
		err       error
		wantLabel string
		wantCode  int
		same      bool
	}{
		{"bus error as is", denied, bus.LabelFederationDenied, 400, true},
		{"wrapped bus error unwrapped", fmt.Errorf("x: %w", denied), bus.LabelFederationDenied, 400, true},
		{"deadline is timeout", context.DeadlineExceeded, bus.LabelTimeout, 504, false},
		{"wrapped deadline is timeout", fmt.Errorf("db: %w", context.DeadlineExceeded), bus.LabelTimeout, 504, false},
		{"plain error is server-error", io.ErrUnexpectedEOF, bus.LabelServerError, 500, false},
		{"canceled is server-error", context.Canceled, bus.LabelServerError, 500, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := bus.AsError(tc.err)
			if e.Label != tc.wantLabel || e.Code != tc.wantCode {
				t.Errorf("AsError(%v) = %d %s, want %d %s", tc.err, e.Code, e.Label, tc.wantCode, tc.wantLabel)
			}
			if tc.same && e != denied {
				t.Errorf("AsError returned a copy %p, want %p", e, denied)
			}
		})
	}
}
