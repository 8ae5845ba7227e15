/* procmond_maps.h - the one map shape both objects repeat: a per-CPU array
 * of a single entry, used as scratch space (records too large for the
 * 512-byte BPF stack) or as a per-CPU counter. */
#ifndef PROCMOND_MAPS_H
#define PROCMOND_MAPS_H

#define PERCPU_SLOT(name, value_type)                                          \
	struct {                                                               \
		__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);                        \
		__uint(max_entries, 1);                                        \
		__type(key, __u32);                                            \
		__type(value, value_type);                                     \
	} name SEC(".maps")

#endif
