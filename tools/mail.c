/*
 * mail.c - compose the refill mails and publish each one exactly once.
 *
 * Owns the spool directory's file names.  A mail is written to a private
 * temporary file (created with O_CREAT|O_EXCL, flushed with fsync) and then
 * published with link(2) under its final name, which fails with EEXIST
 * exactly as O_CREAT|O_EXCL would: the name is claimed exclusively, and a
 * reader never sees half a mail, even after a crash mid-write.  Lines end
 * in LF, as in every local mailbox and spool; the MTA writes CRLF on the
 * wire.  It must
 * never overwrite or remove a published mail.  Customer data (name,
 * address) reaches headers only after it is checked: no CR or LF ever gets
 * in, so a profile cannot add headers or recipients.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "mail.h"
#include "tg_assert.h"
#include "tg_log.h"

/* Bytes of a displayed amount: "-$" and a formatted amount with two decimals. */
#define SHOW_MAX (TG_MONEY_STR_MAX + 8)

bool
tg_mail_address_ok(const char *addr)
{
	size_t n = strlen(addr);
	const char *at = strchr(addr, '@');

	if (n < 3 || n > TG_MAIL_ADDR_MAX || at == NULL || at == addr || at[1] == '\0' ||
	    strchr(at + 1, '@') != NULL)
		return false;
	for (const unsigned char *p = (const unsigned char *)addr; *p != '\0'; p++)
		if (*p <= ' ' || *p >= 0x7f || strchr("<>()[],;:\\\"", *p) != NULL)
			return false;
	return true;
}

int
tg_mail_open(struct tg_mail_spool *s, const char *dir, const char *from, const char *sendmail)
{
	memset(s, 0, sizeof(*s));
	s->dirfd = -1;
	if (!tg_mail_address_ok(from))
		return -EINVAL;
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (faccessat(fd, ".", W_OK, AT_EACCESS) != 0) {
		int e = errno;
		close(fd);
		return -e;
	}
	s->magic = TG_MAIL_SPOOL_MAGIC;
	s->dirfd = fd;
	snprintf(s->from, sizeof(s->from), "%s", from);
	if (gethostname(s->host, sizeof(s->host)) != 0 || s->host[0] == '\0')
		snprintf(s->host, sizeof(s->host), "localhost");
	s->host[sizeof(s->host) - 1] = '\0';
	s->sendmail = sendmail;
	return 0;
}

void
tg_mail_close(struct tg_mail_spool *s)
{
	if (s->magic != TG_MAIL_SPOOL_MAGIC)
		return;
	close(s->dirfd);
	memset(s, 0, sizeof(*s));
	s->dirfd = -1;
}

/* ---- composing ---- */

/* An amount as a customer reads it: "$50.00", "-$1.50", "$0.000125". */
static void
show(tg_money_t v, char *out)
{
	char m[TG_MONEY_STR_MAX];
	size_t n = tg_money_format(v, m);
	const char *digits = m[0] == '-' ? m + 1 : m;
	const char *dot = strchr(digits, '.');
	size_t decimals = dot ? n - (size_t)(dot + 1 - m) : 0;

	snprintf(out, SHOW_MAX, "%s$%s%s", m[0] == '-' ? "-" : "", digits,
	         dot == NULL     ? ".00"
	         : decimals == 1 ? "0"
	                         : "");
}

/* A display name fit for a header: printable ASCII only, no quotes; "" when none is left. */
static void
header_name(const char *name, char *out, size_t cap)
{
	size_t n = 0;

	for (const unsigned char *p = (const unsigned char *)(name ? name : ""); *p && n + 1 < cap;
	     p++)
		if (*p >= ' ' && *p < 0x7f && *p != '"' && *p != '\\')
			out[n++] = (char)*p;
	while (n > 0 && out[n - 1] == ' ')
		n--;
	out[n] = '\0';
}

/* A name for the greeting: any byte but controls (the body is UTF-8). */
static void
body_name(const char *name, char *out, size_t cap)
{
	size_t n = 0;

	for (const unsigned char *p = (const unsigned char *)(name ? name : ""); *p && n + 1 < cap;
	     p++)
		out[n++] = *p < ' ' || *p == 0x7f ? ' ' : (char)*p;
	out[n] = '\0';
}

static const char *
reason_text(const char *reason)
{
	static const struct {
		const char *word, *text;
	} texts[] = {
	    {"declined", "the payment was declined"},
	    {"expired", "the payment method on file has expired"},
	    {"timeout", "the payment processor did not answer"},
	    {"error", "the payment processor reported an error"},
	    {"no-payment-method", "there is no valid credit card or PayPal account on file"},
	};
	for (size_t i = 0; i < TG_ARRAY_LEN(texts); i++)
		if (strcmp(reason, texts[i].word) == 0)
			return texts[i].text;
	return "the payment could not be processed";
}

struct buf {
	char *p;
	size_t n, cap;
	bool overflow;
};

__attribute__((format(printf, 2, 3))) static void
put(struct buf *b, const char *fmt, ...)
{
	va_list ap;

	if (b->overflow)
		return;
	va_start(ap, fmt);
	int k = vsnprintf(b->p + b->n, b->cap - b->n, fmt, ap);
	va_end(ap);
	if (k < 0 || (size_t)k >= b->cap - b->n)
		b->overflow = true;
	else
		b->n += (size_t)k;
}

/* The headers both kinds share, ending with the blank line. */
static void
headers(struct buf *b, const struct tg_mail_spool *s, const struct tg_mail_refill *m,
        const char *kind, const char *subject)
{
	char name[TG_MAIL_NAME_MAX + 1], date[64], msgid[TG_MAIL_NAME_MAX * 2];
	time_t now = time(NULL);
	struct tm tm;
	size_t i;

	gmtime_r(&now, &tm);
	/* %a and %b are the C locale's English names: this program never sets a locale. */
	strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S +0000", &tm);
	/* A Message-ID's left part may not hold ':': "refill.42.1.receipt". */
	snprintf(msgid, sizeof(msgid), "%s.%s", m->request_id, kind);
	for (i = 0; msgid[i] != '\0'; i++)
		if (msgid[i] == ':')
			msgid[i] = '.';
	header_name(m->name, name, sizeof(name));
	if (name[0] != '\0')
		put(b, "To: \"%s\" <%s>\n", name, m->to);
	else
		put(b, "To: %s\n", m->to);
	put(b,
	    "From: %s\n"
	    "Subject: %s\n"
	    "Date: %s\n"
	    "Message-ID: <%s@%s>\n"
	    "MIME-Version: 1.0\n"
	    "Content-Type: text/plain; charset=utf-8\n"
	    "Content-Transfer-Encoding: 8bit\n"
	    "X-Tollgate-Request: %s\n"
	    "\n",
	    s->from, subject, date, msgid, s->host, m->request_id);
}

static void
greeting(struct buf *b, const struct tg_mail_refill *m)
{
	char name[TG_MAIL_NAME_MAX + 1];

	body_name(m->name, name, sizeof(name));
	put(b, "Hello%s%s,\n\n", name[0] ? " " : "", name);
}

static void
compose_receipt(struct buf *b, const struct tg_mail_spool *s, const struct tg_mail_refill *m)
{
	char amount[SHOW_MAX], after[SHOW_MAX], subject[128];

	show(m->amount, amount);
	show(m->balance_after, after);
	snprintf(subject, sizeof(subject), "Auto-refill receipt: %s added to account %llu", amount,
	         (unsigned long long)m->account);
	headers(b, s, m, "receipt", subject);
	greeting(b, m);
	put(b,
	    "Your prepaid account was refilled automatically. This is your receipt.\n"
	    "\n"
	    "  Account:            %llu\n"
	    "  Amount charged:     %s\n"
	    "  Payment method:     %s\n"
	    "  Balance after:      %s\n"
	    "  Gateway reference:  %s\n"
	    "  Request:            %s\n"
	    "\n"
	    "Thank you.\n",
	    (unsigned long long)m->account, amount, m->method ? m->method : "on file", after,
	    m->reference ? m->reference : "-", m->request_id);
}

static void
compose_failure(struct buf *b, const struct tg_mail_spool *s, const struct tg_mail_refill *m)
{
	char amount[SHOW_MAX], bal[SHOW_MAX], subject[128];

	show(m->amount, amount);
	snprintf(subject, sizeof(subject), "Auto-refill failed for account %llu",
	         (unsigned long long)m->account);
	headers(b, s, m, "failure", subject);
	greeting(b, m);
	put(b, "We could not process the auto-refill of your prepaid account %llu:\n%s",
	    (unsigned long long)m->account, reason_text(m->reason));
	if (m->attempts > 1)
		put(b, " (%u attempts)", m->attempts);
	put(b,
	    ".\n"
	    "\n"
	    "  Account:            %llu\n"
	    "  Refill amount:      %s\n"
	    "  Payment method:     %s\n",
	    (unsigned long long)m->account, amount, m->method ? m->method : "none on file");
	if (m->has_balance) {
		show(m->balance_at_request, bal);
		put(b, "  Balance then:       %s\n", bal);
	}
	put(b,
	    "  Request:            %s\n"
	    "\n"
	    "This is the only notification you will receive.\n"
	    "\n"
	    "Your service continues while your prepaid balance lasts: when it falls to\n"
	    "$0.00, you will not be able to use your service. To avoid an interruption,\n"
	    "log in to the online portal and check your payment information (card\n"
	    "number, expiration date, billing address) or add credit to your account.\n",
	    m->request_id);
}

/* ---- publishing ---- */

static int
write_all(int fd, const char *p, size_t n)
{
	while (n > 0) {
		ssize_t w = write(fd, p, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0)
			return -errno;
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

/* Pipe one published mail into the sendmail command; logs, never fails the post. */
static void
pipe_out(const struct tg_mail_spool *s, const char *file, const char *text, size_t len)
{
	FILE *f = popen(s->sendmail, "we");
	int status;

	if (f == NULL) {
		tg_log("mail %s: cannot run \"%s\": %s (the mail stays in the spool)", file,
		       s->sendmail, strerror(errno));
		return;
	}
	size_t w = fwrite(text, 1, len, f);
	status = pclose(f);
	if (w != len || status == -1 || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
		tg_log("mail %s: \"%s\" failed (status %d): the mail stays in the spool", file,
		       s->sendmail, status);
}

int
tg_mail_post(struct tg_mail_spool *s, enum tg_mail_kind kind, const struct tg_mail_refill *m)
{
	char text[TG_MAIL_MAX];
	struct buf b = {.p = text, .cap = sizeof(text)};
	const char *suffix = kind == TG_MAIL_RECEIPT ? "receipt" : "failure";
	char file[TG_CALLID_MAX + 16], tmp[128];
	int fd, rc;

	TG_CHECK_OBJ_NOTNULL(s, TG_MAIL_SPOOL_MAGIC);
	if (m->request_id[0] == '\0' || m->request_id[0] == '.' ||
	    strchr(m->request_id, '/') != NULL || strlen(m->request_id) > TG_CALLID_MAX ||
	    !tg_mail_address_ok(m->to))
		return -EINVAL;
	snprintf(file, sizeof(file), "%s.%s", m->request_id, suffix);
	if (faccessat(s->dirfd, file, F_OK, AT_SYMLINK_NOFOLLOW) == 0)
		return 0; /* the common replay: no need to compose */

	if (kind == TG_MAIL_RECEIPT)
		compose_receipt(&b, s, m);
	else
		compose_failure(&b, s, m);
	if (b.overflow)
		return -EMSGSIZE;

	/* Dot-names: whatever drains the spool skips them. */
	snprintf(tmp, sizeof(tmp), ".tmp.%.60s.%d.%u", s->host, (int)getpid(), ++s->seq);
	fd = openat(s->dirfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0640);
	if (fd < 0)
		return -errno;
	rc = write_all(fd, text, b.n);
	if (rc == 0 && fsync(fd) != 0)
		rc = -errno;
	if (close(fd) != 0 && rc == 0)
		rc = -errno;
	if (rc == 0) {
		rc = linkat(s->dirfd, tmp, s->dirfd, file, 0) == 0 ? 1 : -errno;
		if (rc == -EEXIST)
			rc = 0; /* another worker got there first: its mail is the one */
	}
	unlinkat(s->dirfd, tmp, 0);
	if (rc == 1 && fsync(s->dirfd) != 0)
		tg_log("mail %s: fsync of the spool directory: %s", file, strerror(errno));
	if (rc == 1 && s->sendmail != NULL)
		pipe_out(s, file, text, b.n);
	return rc;
}
