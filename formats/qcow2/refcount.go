package qcow2

type refcounts struct{}
