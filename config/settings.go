package config

import (
	"log/slog"
	"reflect"
	"strings"

	"github.com/fedbus/fedbus/internal/redact"
)

// Settings returns the effective value of every variable of cfg (a
// pointer to a struct with env tags), keyed by the variable's name, for
// the start-up line. Secrets are never shown: a field tagged secret:"true"
// shows "[set]" when it is set, and secret:"userinfo" (URLs) has the
// password or token of each comma-separated URL masked (redact.URLs).
func Settings(cfg any) []slog.Attr {
	var attrs []slog.Attr
	walkValues(reflect.ValueOf(cfg).Elem(), func(f reflect.StructField, name string, v reflect.Value) {
		val := envValue(v)
		switch f.Tag.Get("secret") {
		case "true":
			if val != "" {
				val = "[set]"
			}
		case "userinfo":
			val = redact.URLs(val)
		}
		attrs = append(attrs, slog.String(name, val))
	})
	return attrs
}

// walkValues calls fn for each field of v (a struct) with an env tag,
// nested structs included, with the field's value.
func walkValues(v reflect.Value, fn func(f reflect.StructField, name string, fv reflect.Value)) {
	t := v.Type()
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		tag := f.Tag.Get("env")
		if tag == "" {
			if f.Type.Kind() == reflect.Struct {
				walkValues(v.Field(i), fn)
			}
			continue
		}
		name, _, _ := strings.Cut(tag, ",")
		fn(f, strings.TrimSpace(name), v.Field(i))
	}
}

// fieldOf returns the field of v (a struct, nested structs included)
// whose env tag names the variable name.
func fieldOf(v reflect.Value, name string) (reflect.Value, bool) {
	var found reflect.Value
	walkValues(v, func(_ reflect.StructField, n string, fv reflect.Value) {
		if n == name && !found.IsValid() {
			found = fv
		}
	})
	return found, found.IsValid()
}
