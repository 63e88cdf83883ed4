/*
 * lpm.c - longest-prefix match of destination numbers over one rate plan.
 *
 * Owns the trie of rate-int.h: building it once at load time, and walking it
 * on the hot path.  The walk never allocates, never locks and never writes;
 * the whole structure is immutable after tg__lpm_build, which is what lets
 * plan sets be shared by every worker and swapped under ck_epoch.
 *
 * Cost of a lookup: one read of the jump table (the first up to four digits
 * at once), then one 8-byte edge per further digit until the trie ends.  On
 * a plan of 100k random prefixes an 11-digit destination usually leaves the
 * trie one or two digits after the jump.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "rate-int.h"
#include "tg_assert.h"

#define LPM_NULL 0u
#define LPM_ROOT 1u

static const uint32_t pow10_u32[TG__LPM_JUMP_MAX + 1] = {1, 10, 100, 1000, 10000, 100000, 1000000};

#define HUGE_PAGE ((size_t)2 << 20)

/*
 * Small arrays come from the heap (len 0); from one huge page up, an
 * anonymous mapping trimmed to a 2 MiB-aligned range (len its length), which
 * the kernel backs with huge pages when transparent huge pages allow it.
 */
void *
tg__mem_alloc(size_t bytes, size_t *len)
{
	size_t want, span;
	uintptr_t base, start;
	void *p;

	*len = 0;
	if (bytes < HUGE_PAGE) {
		p = aligned_alloc(64, bytes ? (bytes + 63) & ~(size_t)63 : 64);
		if (p != NULL)
			memset(p, 0, bytes);
		return p;
	}
	want = (bytes + HUGE_PAGE - 1) & ~(HUGE_PAGE - 1);
	span = want + HUGE_PAGE;
	p = mmap(NULL, span, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return NULL;
	base = (uintptr_t)p;
	start = (base + HUGE_PAGE - 1) & ~(uintptr_t)(HUGE_PAGE - 1);
	if (start > base)
		munmap(p, start - base);
	if (base + span > start + want)
		munmap((void *)(start + want), base + span - (start + want));
	/* Only advice: without huge pages the array works the same, a bit slower. */
	(void)madvise((void *)start, want, MADV_HUGEPAGE);
	*len = want;
	return (void *)start;
}

void
tg__mem_free(void *p, size_t len)
{
	if (len != 0)
		munmap(p, len);
	else
		free(p);
}

/* Append a zeroed node; returns its index, or 0 when out of memory. */
static uint32_t
lpm_node_new(struct tg__lpm *lpm, uint32_t *cap)
{
	if (lpm->nnodes == *cap) {
		uint32_t ncap;
		struct tg__lpm_node *n;

		if (*cap > UINT32_MAX / 2)
			return LPM_NULL;
		ncap = *cap * 2;
		n = realloc(lpm->nodes, (size_t)ncap * sizeof(*n));
		if (n == NULL)
			return LPM_NULL;
		lpm->nodes = n;
		*cap = ncap;
	}
	memset(&lpm->nodes[lpm->nnodes], 0, sizeof(lpm->nodes[0]));
	return lpm->nnodes++;
}

/*
 * The jump table is sized to the plan: 10^k edges for the largest k (at most
 * TG__LPM_JUMP_MAX) with 10^k <= 4 * n, so a ten-prefix plan does not carry
 * a 10^4-entry table while a big plan skips the four most-shared levels.
 */
static uint32_t
lpm_jump_digits(uint32_t n)
{
	uint32_t k = 0;

	while (k < TG__LPM_JUMP_MAX && pow10_u32[k + 1] <= 4ull * n)
		k++;
	return k;
}

/*
 * Renumber the nodes breadth first, so each depth is one contiguous run: the
 * shallow levels every lookup passes through stay together in few cache lines
 * and pages instead of being scattered in insertion order.
 */
static int
lpm_bfs(struct tg__lpm *lpm)
{
	uint32_t n = lpm->nnodes, head = 1, tail = 2;
	uint32_t *queue = malloc((size_t)n * sizeof(*queue));
	uint32_t *newidx = malloc((size_t)n * sizeof(*newidx));
	size_t out_map;
	struct tg__lpm_node *out = tg__mem_alloc((size_t)n * sizeof(*out), &out_map);

	if (queue == NULL || newidx == NULL || out == NULL) {
		free(queue);
		free(newidx);
		if (out != NULL)
			tg__mem_free(out, out_map);
		return -ENOMEM;
	}
	queue[0] = LPM_NULL;
	queue[1] = LPM_ROOT;
	while (head < tail) {
		const struct tg__lpm_node *nd = &lpm->nodes[queue[head++]];

		for (unsigned d = 0; d < 10; d++)
			if (nd->e[d].child != LPM_NULL)
				queue[tail++] = nd->e[d].child;
	}
	TG_ASSERT(tail == n);
	for (uint32_t i = 0; i < n; i++)
		newidx[queue[i]] = i;
	for (uint32_t i = 0; i < n; i++) {
		out[i] = lpm->nodes[queue[i]];
		for (unsigned d = 0; d < 10; d++)
			out[i].e[d].child = newidx[out[i].e[d].child];
	}
	free(lpm->nodes);
	lpm->nodes = out;
	lpm->nodes_map = out_map;
	lpm->bfs_done = true;
	free(queue);
	free(newidx);
	return 0;
}

int
tg__lpm_build(struct tg__lpm *lpm, const struct tg_rate *rates, uint32_t n,
              void (*dup)(void *arg, uint32_t first, uint32_t again), void *arg)
{
	uint32_t cap = 64, k, njump;

	memset(lpm, 0, sizeof(*lpm));
	lpm->nodes = malloc((size_t)cap * sizeof(lpm->nodes[0]));
	if (lpm->nodes == NULL)
		return -ENOMEM;
	lpm_node_new(lpm, &cap); /* LPM_NULL: stays all zeros */
	lpm_node_new(lpm, &cap); /* LPM_ROOT */

	for (uint32_t r = 0; r < n; r++) {
		const struct tg_rate *rate = &rates[r];
		uint32_t node = LPM_ROOT;

		TG_ASSERT(rate->prefix_len >= 1 && rate->prefix_len <= TG_DEST_MAX);
		for (uint32_t i = 0; i < rate->prefix_len; i++) {
			unsigned d = (unsigned)(rate->prefix[i] - '0');
			struct tg__lpm_edge *e;

			TG_ASSERT(d <= 9);
			e = &lpm->nodes[node].e[d];
			if (i + 1 == rate->prefix_len) {
				if (e->rate != 0) {
					if (dup != NULL)
						dup(arg, e->rate - 1, r);
				} else {
					e->rate = r + 1;
				}
			} else if (e->child != LPM_NULL) {
				node = e->child;
			} else {
				uint32_t c = lpm_node_new(lpm, &cap);

				if (c == LPM_NULL)
					return -ENOMEM;
				/* lpm_node_new may have moved the array: index again. */
				lpm->nodes[node].e[d].child = c;
				node = c;
			}
		}
	}
	if (lpm_bfs(lpm) != 0)
		return -ENOMEM;

	k = lpm_jump_digits(n);
	njump = pow10_u32[k];
	lpm->jump_digits = k;
	lpm->jump = tg__mem_alloc((size_t)njump * sizeof(lpm->jump[0]), &lpm->jump_map);
	if (lpm->jump == NULL)
		return -ENOMEM;
	for (uint32_t v = 0; v < njump; v++) {
		uint32_t node = LPM_ROOT, best = 0;

		/* Walk v's k digits, most significant first; node 0 reads as empty. */
		for (uint32_t i = 0; i < k; i++) {
			unsigned d = (v / pow10_u32[k - 1 - i]) % 10;
			const struct tg__lpm_edge *e = &lpm->nodes[node].e[d];

			if (e->rate != 0)
				best = e->rate;
			node = e->child;
		}
		lpm->jump[v].child = node;
		lpm->jump[v].rate = best;
	}
	return 0;
}

void
tg__lpm_free(struct tg__lpm *lpm)
{
	if (lpm->bfs_done)
		tg__mem_free(lpm->nodes, lpm->nodes_map);
	else
		free(lpm->nodes);
	if (lpm->jump != NULL)
		tg__mem_free(lpm->jump, lpm->jump_map);
	memset(lpm, 0, sizeof(*lpm));
}

/*
 * Hot path.  Validates the whole destination first (digits only, 1..
 * TG_DEST_MAX), so the walk itself has no checks but the end of the trie.
 */
const struct tg_rate *
tg_plan_match(const struct tg_plan *p, const char *dest, size_t len)
{
	const struct tg__lpm *lpm;
	const struct tg__lpm_node *nodes;
	struct tg__lpm_edge e;
	uint32_t best, node, idx = 0;
	size_t i, k;

	TG_CHECK_OBJ_NOTNULL(p, TG__PLAN_MAGIC);
	if (len == 0 || len > TG_DEST_MAX)
		return NULL;
	for (i = 0; i < len; i++)
		if ((unsigned)(dest[i] - '0') > 9)
			return NULL;

	lpm = &p->lpm;
	nodes = lpm->nodes;
	k = lpm->jump_digits;
	if (TG_LIKELY(len >= k)) {
		for (i = 0; i < k; i++)
			idx = idx * 10 + (uint32_t)(dest[i] - '0');
		e = lpm->jump[idx];
		best = e.rate;
		node = e.child;
	} else {
		best = 0;
		node = LPM_ROOT;
		i = 0;
	}
	for (; node != LPM_NULL && i < len; i++) {
		e = nodes[node].e[dest[i] - '0'];
		best = e.rate != 0 ? e.rate : best;
		node = e.child;
	}
	return best != 0 ? &p->rates[best - 1] : NULL;
}
