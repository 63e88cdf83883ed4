/*
 * ring_tsan.h - RING_BEGIN() / RING_END() around ck_ring calls (refill.c,
 * stops.c).  ck_ring moves its indices with volatile accesses and fences,
 * which ThreadSanitizer cannot model, so a TSan build looks away inside the
 * ring calls; elsewhere they are nothing.  What crosses those rings is a
 * hint the consumer validates against atomic state, so nothing is lost to
 * the check.  Internal to those two files.
 */
#ifndef TG__RING_TSAN_H
#define TG__RING_TSAN_H

#if defined(TG_TSAN)
void AnnotateIgnoreReadsBegin(const char *file, int line);
void AnnotateIgnoreReadsEnd(const char *file, int line);
void AnnotateIgnoreWritesBegin(const char *file, int line);
void AnnotateIgnoreWritesEnd(const char *file, int line);
#define RING_BEGIN()                                                                               \
	(AnnotateIgnoreReadsBegin(__FILE__, __LINE__),                                             \
	 AnnotateIgnoreWritesBegin(__FILE__, __LINE__))
#define RING_END()                                                                                 \
	(AnnotateIgnoreWritesEnd(__FILE__, __LINE__), AnnotateIgnoreReadsEnd(__FILE__, __LINE__))
#else
#define RING_BEGIN() ((void)0)
#define RING_END()   ((void)0)
#endif

#endif
