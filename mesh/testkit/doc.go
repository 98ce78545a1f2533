// Package testkit is the shared kit for qpq's tests: a fake clock, a
// wait-for with a deadline, a settle (quiet) wait, and a goroutine-leak
// check. It is for tests only: no non-test code imports it, so it never
// reaches the router binary. It sits on the lowest floor that has tests
// (mesh) and imports nothing of qpq, so every package's tests may use it.
package testkit
