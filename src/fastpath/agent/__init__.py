"""The node agent: one per machine, owning its node. It registers the node in the
cluster datastore, holds its pod CIDR, serves CNI, renders BIRD from the datastore, and
keeps the node's service table and accel's local map current (`daemon`)."""
