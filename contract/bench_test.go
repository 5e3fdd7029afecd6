package contract_test

import (
	"testing"

	"github.com/fedbus/fedbus/contract"
)

var (
	benchRoute contract.Route
	benchStr   string
)

func BenchmarkParseOut(b *testing.B) {
	subjects := newSubjects(b, contract.DefaultPrefix)
	for _, bc := range []struct{ name, subject string }{
		{"canonical", "fed.out.brig.get-user-by-handle.b.example.com"},
		{"upper-case", "fed.out.brig.get-user-by-handle.B.Example.COM"},
		{"idna", "fed.out.brig.get-user-by-handle.bücher.example"},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				r, err := subjects.ParseOut(bc.subject)
				if err != nil {
					b.Fatal(err)
				}
				benchRoute = r
			}
		})
	}
}

func BenchmarkNormalizeDomain(b *testing.B) {
	for _, bc := range []struct{ name, domain string }{
		{"canonical", "b.example.com"},
		{"upper-case", "B.Example.COM"},
		{"idna", "bücher.example"},
		{"253-chars", domainOfLen(b, 253)},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				d, err := contract.NormalizeDomain(bc.domain)
				if err != nil {
					b.Fatal(err)
				}
				benchStr = d
			}
		})
	}
}
