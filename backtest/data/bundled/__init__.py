"""The bundled real dataset (package data). See README.md in this folder for provenance."""
