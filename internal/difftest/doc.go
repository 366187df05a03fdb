// Package difftest holds the differential test of qimg against qemu-img 7.2:
// random operation sequences run on twin images, one twin with each tool,
// compared after every step and shrunk to a shell script on a divergence.
// It has no code outside its tests.
package difftest
