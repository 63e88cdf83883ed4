/*
 * lpm.c - longest-prefix match of destination numbers over one rate plan.
 *
 * Owns the trie of rate-int.h: building it once at load time, and walking it
 * on the hot path.  The walk never allocates, never locks and never writes;
 * the whole structure is immutable after tg__lpm_build, which is what lets
 * plan sets be shared by every worker and swapped under ck_epoch.
 *
 * Cost of a lookup: one 4-byte read of the jump table (the first up to six
 * digits at once), then one cache line per further digit until the trie
 * ends.  On a plan of 100k random prefixes (a 5-digit jump) about half of the
 * 11-digit destinations are answered by the jump table alone and nearly all
 * the rest by one node more.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "rate-int.h"
#include "tg_assert.h"

#define LPM_NONE  0u
#define LPM_ROOT  1u
#define HUGE_PAGE ((size_t)2 << 20)

static const uint32_t pow10_u32[TG__LPM_JUMP_MAX + 1] = {1, 10, 100, 1000, 10000, 100000, 1000000};

/*
 * The trie while it is built: a growable array in insertion order, each edge
 * with its child and the rate ending on it.  Turned into the compact
 * read-only form of rate-int.h once every prefix is in.
 */
struct bedge {
	uint32_t child; /* node index, 0 = none */
	uint32_t rate;  /* rate index + 1, 0 = none */
};

struct bnode {
	struct bedge e[10];
};

struct build {
	struct bnode *nodes;
	uint32_t n, cap;
};

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

/* Append a zeroed node; returns its index (>= 2), or 0 when out of memory. */
static uint32_t
build_node(struct build *b)
{
	if (b->n == b->cap) {
		uint32_t ncap = b->cap * 2;
		struct bnode *nn;

		if (b->cap > TG__LPM_LEAF / 2)
			return LPM_NONE;
		nn = realloc(b->nodes, (size_t)ncap * sizeof(*nn));
		if (nn == NULL)
			return LPM_NONE;
		b->nodes = nn;
		b->cap = ncap;
	}
	memset(&b->nodes[b->n], 0, sizeof(b->nodes[0]));
	return b->n++;
}

/* Insert every prefix; a prefix already present is reported to dup and skipped. */
static int
build_insert(struct build *b, const struct tg_rate *rates, uint32_t n,
             void (*dup)(void *arg, uint32_t first, uint32_t again), void *arg)
{
	for (uint32_t r = 0; r < n; r++) {
		const struct tg_rate *rate = &rates[r];
		uint32_t node = LPM_ROOT;

		TG_ASSERT(rate->prefix_len >= 1 && rate->prefix_len <= TG_DEST_MAX);
		for (uint32_t i = 0; i < rate->prefix_len; i++) {
			unsigned d = (unsigned)(rate->prefix[i] - '0');
			struct bedge *e;

			TG_ASSERT(d <= 9);
			e = &b->nodes[node].e[d];
			if (i + 1 == rate->prefix_len) {
				if (e->rate != 0) {
					if (dup != NULL)
						dup(arg, e->rate - 1, r);
				} else {
					e->rate = r + 1;
				}
			} else if (e->child != LPM_NONE) {
				node = e->child;
			} else {
				uint32_t c = build_node(b);

				if (c == LPM_NONE)
					return -ENOMEM;
				/* build_node may have moved the array: index again. */
				b->nodes[node].e[d].child = c;
				node = c;
			}
		}
	}
	return 0;
}

/* The read-only link of a build edge, given the new node numbers. */
static uint32_t
link_of(const struct bedge *e, const uint32_t *newidx)
{
	if (e->child != LPM_NONE)
		return newidx[e->child];
	return e->rate != 0 ? TG__LPM_LEAF | e->rate : 0;
}

/*
 * Lay the nodes out breadth first, so each depth is one contiguous run: the
 * shallow levels every lookup passes through stay together in few lines and
 * pages instead of being scattered in insertion order.  Each node's best is
 * its parent's, or the rate on the edge that leads to it.
 */
static int
build_finish(struct build *b, struct tg__lpm *lpm)
{
	uint32_t n = b->n, head = 1, tail = 2;
	uint32_t *queue = malloc((size_t)n * sizeof(*queue));
	uint32_t *newidx = malloc((size_t)n * sizeof(*newidx));
	uint32_t *best = calloc(n, sizeof(*best));
	int rc = -ENOMEM;

	lpm->nodes = tg__mem_alloc((size_t)n * sizeof(lpm->nodes[0]), &lpm->nodes_map);
	if (queue == NULL || newidx == NULL || best == NULL || lpm->nodes == NULL)
		goto out;
	lpm->nnodes = n;
	queue[0] = LPM_NONE;
	queue[1] = LPM_ROOT;
	while (head < tail) {
		uint32_t from = queue[head++];
		const struct bnode *nd = &b->nodes[from];

		for (unsigned d = 0; d < 10; d++) {
			uint32_t c = nd->e[d].child;

			if (c != LPM_NONE) {
				best[c] = nd->e[d].rate != 0 ? nd->e[d].rate : best[from];
				queue[tail++] = c;
			}
		}
	}
	TG_ASSERT(tail == n);
	for (uint32_t i = 0; i < n; i++)
		newidx[queue[i]] = i;
	for (uint32_t i = 1; i < n; i++) {
		const struct bnode *from = &b->nodes[queue[i]];
		struct tg__lpm_node *to = &lpm->nodes[i];

		to->best = best[queue[i]];
		for (unsigned d = 0; d < 10; d++)
			to->link[d] = link_of(&from->e[d], newidx);
	}
	rc = 0;
out:
	free(queue);
	free(newidx);
	free(best);
	return rc;
}

/*
 * The jump table is sized to the plan: 10^k links for the largest k (at most
 * TG__LPM_JUMP_MAX) with 10^k <= 4 * n, so a ten-prefix plan does not carry
 * a big table while a big plan skips its most-shared levels at once.
 */
static uint32_t
lpm_jump_digits(uint32_t n)
{
	uint32_t k = 0;

	while (k < TG__LPM_JUMP_MAX && pow10_u32[k + 1] <= 4ull * n)
		k++;
	return k;
}

/* For each k-digit v, where a walk stands after v: a node, a leaf rate, or 0. */
static int
build_jump(struct tg__lpm *lpm, uint32_t n)
{
	uint32_t k = lpm_jump_digits(n), njump = pow10_u32[k];

	lpm->jump_digits = k;
	lpm->jump = tg__mem_alloc((size_t)njump * sizeof(lpm->jump[0]), &lpm->jump_map);
	if (lpm->jump == NULL)
		return -ENOMEM;
	for (uint32_t v = 0; v < njump; v++) {
		uint32_t link = LPM_ROOT;

		for (uint32_t i = 0; i < k && link != 0 && !(link & TG__LPM_LEAF); i++) {
			const struct tg__lpm_node *nd = &lpm->nodes[link];
			uint32_t next = nd->link[(v / pow10_u32[k - 1 - i]) % 10];

			/* Fell off below a node: the answer is that node's best. */
			link = next != 0 ? next : (nd->best != 0 ? TG__LPM_LEAF | nd->best : 0);
		}
		lpm->jump[v] = link;
	}
	return 0;
}

int
tg__lpm_build(struct tg__lpm *lpm, const struct tg_rate *rates, uint32_t n,
              void (*dup)(void *arg, uint32_t first, uint32_t again), void *arg)
{
	/* Node 0 stays unused (a link of 0 means none); node 1 is the root. */
	struct build b = {calloc(64, sizeof(struct bnode)), 2, 64};
	int rc;

	memset(lpm, 0, sizeof(*lpm));
	if (b.nodes == NULL)
		return -ENOMEM;
	rc = build_insert(&b, rates, n, dup, arg);
	if (rc == 0)
		rc = build_finish(&b, lpm);
	if (rc == 0)
		rc = build_jump(lpm, n);
	free(b.nodes);
	return rc;
}

void
tg__lpm_free(struct tg__lpm *lpm)
{
	if (lpm->nodes != NULL)
		tg__mem_free(lpm->nodes, lpm->nodes_map);
	if (lpm->jump != NULL)
		tg__mem_free(lpm->jump, lpm->jump_map);
	memset(lpm, 0, sizeof(*lpm));
}

/*
 * Hot path.  Validates the whole destination first (digits only, 1..
 * TG_DEST_MAX), so the walk itself has no checks but the end of the trie.
 */
void
tg_plan_prefetch(const struct tg_plan *p, const char *dest, size_t len)
{
	const struct tg__lpm *lpm = &p->lpm;
	uint32_t idx = 0;
	size_t k = lpm->jump_digits;

	if (len < k || len > TG_DEST_MAX)
		return;
	for (size_t i = 0; i < k; i++) {
		if ((unsigned)(dest[i] - '0') > 9)
			return;
		idx = idx * 10 + (uint32_t)(dest[i] - '0');
	}
	__builtin_prefetch(&lpm->jump[idx], 0);
}

const struct tg_rate *
tg_plan_match(const struct tg_plan *p, const char *dest, size_t len)
{
	const struct tg__lpm *lpm;
	uint32_t link, best = 0, idx = 0;
	size_t i, k;

	TG_CHECK_OBJ_NOTNULL(p, TG__PLAN_MAGIC);
	if (len == 0 || len > TG_DEST_MAX)
		return NULL;
	for (i = 0; i < len; i++)
		if ((unsigned)(dest[i] - '0') > 9)
			return NULL;

	lpm = &p->lpm;
	k = lpm->jump_digits;
	if (TG_LIKELY(len >= k)) {
		for (i = 0; i < k; i++)
			idx = idx * 10 + (uint32_t)(dest[i] - '0');
		link = lpm->jump[idx];
	} else {
		link = LPM_ROOT;
		i = 0;
	}
	for (;;) {
		const struct tg__lpm_node *nd;

		if (link & TG__LPM_LEAF) {
			best = link & ~TG__LPM_LEAF;
			break;
		}
		if (link == 0)
			break;
		nd = &lpm->nodes[link];
		best = nd->best;
		if (i == len)
			break;
		link = nd->link[dest[i++] - '0'];
	}
	return best != 0 ? &p->rates[best - 1] : NULL;
}
