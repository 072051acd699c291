/* hist.h: fixed-bucket log histograms of microsecond durations: one increment per event, percentiles on demand. */
#ifndef PGMUX_HIST_H
#define PGMUX_HIST_H

#include <stddef.h>
#include <stdint.h>

/* 8 sub-buckets per power of two: a percentile is exact to within 12.5 %, up to 2^40 µs. */
#define HIST_SUB_BITS 3
#define HIST_SUB (1u << HIST_SUB_BITS)
#define HIST_BUCKETS (41 * HIST_SUB)

struct hist {
	uint64_t count;
	uint32_t b[HIST_BUCKETS];
};

/* Bucket of a duration; buckets grow by 2^(1/8) above 8 µs, and are exact below. */
static inline uint32_t hist_bucket(uint64_t us)
{
	if (us < HIST_SUB)
		return (uint32_t)us;
	uint32_t lg = 63u - (uint32_t)__builtin_clzll(us);          /* >= HIST_SUB_BITS */
	uint32_t sub = (uint32_t)(us >> (lg - HIST_SUB_BITS)) & (HIST_SUB - 1);
	uint32_t i = (lg - HIST_SUB_BITS + 1) * HIST_SUB + sub;
	return i < HIST_BUCKETS ? i : HIST_BUCKETS - 1;
}

/* The hot-path call: one increment, no allocation. */
static inline void hist_add(struct hist *h, uint64_t us)
{
	h->b[hist_bucket(us)]++;
	h->count++;
}

/* Lower bound (µs) of a bucket. */
uint64_t hist_bucket_low(uint32_t i);

/* The q-quantile (0 < q <= 1) in µs, as the upper bound of the bucket that holds it (so p99 is
 * never understated); 0 when empty. */
uint64_t hist_quantile(const struct hist *h, double q);

/* Cumulative counts for a Prometheus histogram: out[e] = events below edges[e] µs, for n
 * ascending edges.  Exact when each edge is a bucket's lower bound (every power of two is);
 * any other edge counts only the buckets wholly below it. */
void hist_counts_below(const struct hist *h, const uint64_t *edges, size_t n, uint64_t *out);

/* a += b. */
void hist_merge(struct hist *a, const struct hist *b);

#endif
