/* hist.c: percentiles from the fixed-bucket log histograms. */
#include "hist.h"

uint64_t hist_bucket_low(uint32_t i)
{
	if (i < HIST_SUB)
		return i;
	uint32_t lg = i / HIST_SUB - 1 + HIST_SUB_BITS, sub = i % HIST_SUB;
	return ((uint64_t)HIST_SUB + sub) << (lg - HIST_SUB_BITS);
}

uint64_t hist_quantile(const struct hist *h, double q)
{
	if (!h->count)
		return 0;
	uint64_t rank = (uint64_t)(q * (double)h->count + 0.999999);
	if (rank < 1)
		rank = 1;
	uint64_t seen = 0;
	for (uint32_t i = 0; i < HIST_BUCKETS; i++) {
		seen += h->b[i];
		if (seen >= rank)
			return i + 1 < HIST_BUCKETS ? hist_bucket_low(i + 1) - 1 : hist_bucket_low(i);
	}
	return hist_bucket_low(HIST_BUCKETS - 1);
}

void hist_counts_below(const struct hist *h, const uint64_t *edges, size_t n, uint64_t *out)
{
	size_t e = 0;
	uint64_t seen = 0;
	for (uint32_t i = 0; i < HIST_BUCKETS && e < n; i++) {
		/* bucket i holds [low(i), low(i + 1)); the last one has no upper bound */
		uint64_t upper = i + 1 < HIST_BUCKETS ? hist_bucket_low(i + 1) : UINT64_MAX;
		while (e < n && edges[e] < upper)
			out[e++] = seen;
		seen += h->b[i];
	}
	while (e < n)
		out[e++] = seen;
}

void hist_merge(struct hist *a, const struct hist *b)
{
	for (uint32_t i = 0; i < HIST_BUCKETS; i++)
		a->b[i] += b->b[i];
	a->count += b->count;
}
