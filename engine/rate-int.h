/*
 * rate-int.h - the insides of a plan set, shared by rate.c, rate_load.c and
 * lpm.c and by nobody else.
 *
 * A plan's prefixes are a 10-ary trie held in one flat array of nodes, built
 * once at load time and never changed afterwards; readers follow it without
 * locks or allocation.  Each node is ten edges, and an edge carries both the
 * child node (0 = none) and the rate of the prefix that ends on that edge
 * (index + 1, 0 = none), so one step of a lookup reads one 8-byte edge: one
 * cache line per digit.  A direct-indexed jump table over the first
 * jump_digits digits replaces the top of the walk; node 0 is an all-empty
 * node so that a walk which falls off the trie reads zeros and stops.
 */
#ifndef TG_RATE_INT_H
#define TG_RATE_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tg_rate.h"

#define TG__PLAN_MAGIC    0x706c616eu /* "plan" */
#define TG__PLANSET_MAGIC 0x706c7374u /* "plst" */

/* The jump table covers at most this many leading digits (10^6 edges). */
#define TG__LPM_JUMP_MAX 6

struct tg__lpm_edge {
	uint32_t child; /* node index, 0 = no longer prefix below this edge */
	uint32_t rate;  /* rate index + 1 of the prefix ending here, 0 = none */
};

struct tg__lpm_node {
	struct tg__lpm_edge e[10];
};

struct tg__lpm {
	struct tg__lpm_node *nodes; /* [0] empty, [1] root; breadth-first order */
	uint32_t nnodes;
	uint32_t jump_digits;      /* 0..TG__LPM_JUMP_MAX */
	struct tg__lpm_edge *jump; /* 10^jump_digits edges: node at that depth, best rate so far */
	size_t nodes_map, jump_map; /* tg__mem_alloc lengths */
	bool bfs_done;              /* nodes from tg__mem_alloc, not the build's realloc */
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

/* NULL when name (len bytes) is a valid plan name, else why it is not. */
const char *tg__plan_name_check(const char *name, size_t len);

/* A plan set with no plans (the live set before the first reload), or NULL. */
struct tg_planset *tg__planset_empty(void);

#endif
