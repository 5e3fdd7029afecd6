// Package redact keeps secrets out of errors and logs: the password (or
// token) that a NATS URL may carry in its user information.
package redact

import (
	"errors"
	"net/url"
	"strings"
)

// Mask replaces a secret.
const Mask = "xxxxx"

// minSecret is the length from which a secret is also masked wherever it
// appears in an error's text (a shorter one would mask unrelated words;
// the URLs themselves are masked whatever the length).
const minSecret = 4

// URLs returns urls (one URL or several, comma-separated) with the secret
// of each URL's user information masked: the password of
// "nats://user:password@host" and the token of "nats://token@host" (NATS
// reads a user name without password as a token). Parts that are not
// URLs are kept, but for their user information.
func URLs(urls string) string {
	if !strings.Contains(urls, "@") {
		return urls
	}
	parts := strings.Split(urls, ",")
	for i, p := range parts {
		parts[i] = oneURL(p)
	}
	return strings.Join(parts, ",")
}

// oneURL masks the secret of one URL's user information.
func oneURL(u string) string {
	start, end, ok := userinfo(u)
	if !ok {
		return u
	}
	info := u[start:end]
	if user, _, hasPassword := strings.Cut(info, ":"); hasPassword {
		info = user + ":" + Mask
	} else {
		info = Mask
	}
	return u[:start] + info + u[end:]
}

// userinfo returns the bounds of the user information of u: after
// "scheme://" (or the start), before the last "@" of the authority.
func userinfo(u string) (start, end int, ok bool) {
	if i := strings.Index(u, "://"); i >= 0 {
		start = i + len("://")
	}
	authority := u[start:]
	if j := strings.IndexAny(authority, "/?#"); j >= 0 {
		authority = authority[:j]
	}
	at := strings.LastIndexByte(authority, '@')
	if at < 0 {
		return 0, 0, false
	}
	return start, start + at, true
}

// secrets returns the secrets of urls' user information (unescaped as
// well as written), longest first.
func secrets(urls string) []string {
	var out []string
	for _, p := range strings.Split(urls, ",") {
		start, end, ok := userinfo(p)
		if !ok {
			continue
		}
		info := p[start:end]
		secret := info
		if _, pw, hasPassword := strings.Cut(info, ":"); hasPassword {
			secret = pw
		}
		if secret == "" {
			continue
		}
		out = append(out, secret)
		if s, err := url.PathUnescape(secret); err == nil && s != secret && s != "" {
			out = append(out, s)
		}
	}
	return out
}

func containsAny(s string, subs []string) bool {
	for _, sub := range subs {
		if strings.Contains(s, sub) {
			return true
		}
	}
	return false
}

// Error is an error whose text had the secrets of a set of URLs masked.
// It unwraps to the original error, or, when that one's text holds a
// secret (a *url.Error quotes the whole URL), to the first error of its
// chain whose text does not.
type Error struct {
	msg string
	err error
}

func (e *Error) Error() string { return e.msg }
func (e *Error) Unwrap() error { return e.err }

// URLError returns err with the secrets of urls masked in its text (a
// *url.Error replaced by its cause, see Error), with the prefix op and the
// masked urls: "<op> <masked urls>: <masked err>". nil stays nil.
func URLError(op, urls string, err error) error {
	if err == nil {
		return nil
	}
	inner, text := err, err.Error()
	var ue *url.Error
	if errors.As(err, &ue) {
		inner = ue.Err
		text = (&url.Error{Op: ue.Op, URL: URLs(ue.URL), Err: ue.Err}).Error()
	}
	secrets := secrets(urls)
	for _, s := range secrets {
		if len(s) >= minSecret {
			text = strings.ReplaceAll(text, s, Mask)
		}
	}
	// Unwrap to the first error of the chain whose own text is clean.
	for inner != nil && containsAny(inner.Error(), secrets) {
		inner = errors.Unwrap(inner)
	}
	return &Error{msg: op + " " + URLs(urls) + ": " + text, err: inner}
}
