// Package bus is the NATS side of fedbus: the one registry of subjects and
// header names, token validation, the CloudEvents codec, the typed federation
// error of the contract, and the client and server that components use to
// make and serve federated calls, and to publish (Notifier) and consume
// (ServeNotifications) notifications (contract section 6).
package bus
