/*
 * rate-int.h - the insides of a plan set, shared by rate.c, rate_load.c and
 * lpm.c and by nobody else.
 *
 * A plan's prefixes are a 10-ary trie held in one flat array of nodes, built
 * once at load time and never changed afterwards; readers follow it without
 * locks or allocation.  A node is one cache line: the rate of the longest
 * prefix on the path to it, and ten 4-byte links.  A link is 0 (no prefix
 * continues with that digit), a node index, or TG__LPM_LEAF | rate for a
 * prefix that ends there with nothing longer below it.  So one digit of a
 * lookup reads one line.  A direct-indexed jump table of links over the
 * first jump_digits digits replaces the top of the walk.
 */
#ifndef TG_RATE_INT_H
#define TG_RATE_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tg_atomic.h" /* before any ck header: chooses ck's backend under TSan */
#include "tg_rate.h"

#define TG__PLAN_MAGIC    0x706c616eu /* "plan" */
#define TG__PLANSET_MAGIC 0x706c7374u /* "plst" */

/* The jump table covers at most this many leading digits (10^6 links). */
#define TG__LPM_JUMP_MAX 6
/* A link that is a rate (index + 1) rather than a node. */
#define TG__LPM_LEAF 0x80000000u

struct tg__lpm_node {
	uint32_t best; /* rate index + 1 of the longest prefix ending at or above here, or 0 */
	uint32_t link[10];
	uint32_t pad[5];
} __attribute__((aligned(64)));

_Static_assert(sizeof(struct tg__lpm_node) == 64, "one cache line per trie node");
_Static_assert(TG_PREFIXES_MAX < TG__LPM_LEAF, "a rate index fits beside the leaf bit");

struct tg__lpm {
	struct tg__lpm_node *nodes; /* [0] unused, [1] root; breadth-first order */
	uint32_t nnodes;
	uint32_t jump_digits;       /* 0..TG__LPM_JUMP_MAX */
	uint32_t *jump;             /* 10^jump_digits links: where a walk is after those digits */
	size_t nodes_map, jump_map; /* tg__mem_alloc lengths */
};

struct tg_plan {
	uint32_t magic;
	uint32_t id;
	char name[TG_PLAN_NAME_MAX + 1];
	struct tg_rate *rates; /* in file order; 64-byte aligned, one line each */
	size_t rates_map;      /* tg__mem_alloc length */
	uint32_t nrates;
	struct tg__lpm lpm;
};

struct tg_planset {
	uint32_t magic;
	uint32_t nplans;
	size_t nprefixes;
	struct tg_plan *plans;  /* nplans */
	struct tg_plan **by_id; /* nby_id slots, NULL where this set has no such plan */
	uint32_t nby_id;
	uint64_t serial; /* unique per set ever built: caches keyed on it never see an ABA */
};

/*
 * Build the trie of rates[0..n) into lpm.  On a prefix that is already in the
 * trie, calls dup(arg, first, again) with the two rate indexes and goes on;
 * returns -ENOMEM or 0.  The caller frees lpm with tg__lpm_free either way.
 */
int tg__lpm_build(struct tg__lpm *lpm, const struct tg_rate *rates, uint32_t n,
                  void (*dup)(void *arg, uint32_t first, uint32_t again), void *arg);
void tg__lpm_free(struct tg__lpm *lpm);

/*
 * Zeroed, 64-byte aligned memory for the read-mostly arrays of a plan.  Big
 * arrays are mapped on 2 MiB boundaries and offered transparent huge pages,
 * since a lookup touches a few random lines of several megabytes and would
 * otherwise pay a TLB miss for most of them.  *len is what tg__mem_free needs.
 */
void *tg__mem_alloc(size_t bytes, size_t *len);
void tg__mem_free(void *p, size_t len);

/* A plan set with no plans (the live set before the first reload), or NULL. */
struct tg_planset *tg__planset_empty(void);

#endif
