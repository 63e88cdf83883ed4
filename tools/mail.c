/*
 * mail.c - compose the refill mails and deliver them through a notifier:
 * a maildir or a sendmail pipe.
 *
 * The maildir notifier owns the names it links into new/: a mail is written
 * to a private file in tmp/ (created with O_CREAT|O_EXCL, flushed with
 * fsync) and published with link(2) under a name made of the request id
 * and the kind, which fails with EEXIST if that name exists: the name is
 * claimed exclusively, and a reader never sees half a mail, even after a
 * crash mid-write.  It must never overwrite or remove a delivered mail.  The
 * sendmail notifier only pipes; claiming a mail before it is piped is its
 * caller's business.  Lines end in LF, as in every maildir and mailbox; the
 * MTA writes CRLF on the wire.  Customer data (name, address, token) reaches
 * headers only after it is checked: no CR or LF ever gets in, so a profile
 * cannot add headers or recipients; a token is never shown whole.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "mail.h"
#include "tg_assert.h"
#include "tg_log.h"
#include "tg_refill_wire.h"

/* Bytes of a displayed amount: a sign, the currency symbol, the amount, its decimals. */
#define SHOW_MAX (TG_MONEY_STR_MAX + 16)
/* Bytes of a displayed payment method: "credit card ****abcd". */
#define METHOD_MAX 32
/* Bytes of an RFC 5322 date, "Thu, 26 Nov 2026 13:58:40 +0000". */
#define DATE_MAX 64
/* Characters of a token shown in a mail: its last four, after a fixed mask. */
#define TOKEN_SHOWN 4
#define HOST_MAX    64

#define MAILDIR_MAGIC  0x6d646972u /* "mdir" */
#define SENDMAIL_MAGIC 0x736e646du /* "sndm" */

const char *
tg_mail_kind_name(enum tg_mail_kind kind)
{
	return kind == TG_MAIL_RECEIPT ? "receipt" : kind == TG_MAIL_FAILURE ? "failure" : "notice";
}

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

/* A request id fit for a file name and a header: letters, digits, ':', '-', '_'. */
static bool
request_id_ok(const char *id)
{
	size_t n = strlen(id);

	if (n == 0 || n > TG_CALLID_MAX)
		return false;
	for (const char *p = id; *p != '\0'; p++)
		if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
		      (*p >= '0' && *p <= '9') || *p == ':' || *p == '-' || *p == '_'))
			return false;
	return true;
}

int
tg_mail_file_name(const char *request_id, enum tg_mail_kind kind, char *out, size_t cap)
{
	if (!request_id_ok(request_id) ||
	    (size_t)snprintf(out, cap, "%s.%s", request_id, tg_mail_kind_name(kind)) >= cap)
		return -EINVAL;
	/* No '.' in an id, so "a:b" -> "a.b" cannot meet another id's name. */
	for (char *p = out; *p != '\0'; p++)
		if (*p == ':')
			*p = '.';
	return 0;
}

/* ---- composing ---- */

/*
 * An amount as a customer reads it, in the currency (tg_currency()):
 * "$50.00", "-$1.50"; an amount finer than the minor unit keeps its digits.
 */
static void
show(tg_money_t v, char *out)
{
	char *p = out;

	if (v < 0)
		*p++ = '-';
	tg_currency_format(tg_currency(), v < 0 && v != TG_MONEY_MIN ? -v : v, p);
}

/*
 * The payment method as the customer knows it: "credit card ****4242",
 * "PayPal ****a1b2".  Only the token's last four characters are shown, and
 * only when it has more than four (printable ones: the worker checked).
 */
static void
method_text(const char *method, const char *token, const char *none, char *out)
{
	size_t n = token ? strlen(token) : 0;

	if (method == NULL) {
		snprintf(out, METHOD_MAX, "%s", none);
		return;
	}
	const char *word = tg_pay_method_parse(method) == TG_PAY_PAYPAL ? "PayPal" : "credit card";
	if (n > TOKEN_SHOWN)
		snprintf(out, METHOD_MAX, "%s ****%s", word, token + n - TOKEN_SHOWN);
	else
		snprintf(out, METHOD_MAX, "%s", word);
}

/* RFC 5322 date in UTC.  %a and %b are the C locale's English names: no locale is ever set. */
static void
date_text(time_t t, char *out)
{
	struct tm tm;

	gmtime_r(&t, &tm);
	strftime(out, DATE_MAX, "%a, %d %b %Y %H:%M:%S +0000", &tm);
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
	for (size_t i = 0; reason != NULL && i < TG_ARRAY_LEN(texts); i++)
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
headers(struct buf *b, const char *from, const char *host, const struct tg_mail_refill *m,
        enum tg_mail_kind kind, const char *subject, const char *date)
{
	char name[TG_MAIL_NAME_MAX + 1], msgid[TG_MAIL_FILE_MAX];

	/* A Message-ID's left part may not hold ':': the file name's form, "refill.42.1.receipt".
	 */
	tg_mail_file_name(m->request_id, kind, msgid, sizeof(msgid));
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
	    from, subject, date, msgid, host, m->request_id);
}

static void
greeting(struct buf *b, const struct tg_mail_refill *m)
{
	char name[TG_MAIL_NAME_MAX + 1];

	body_name(m->name, name, sizeof(name));
	put(b, "Hello%s%s,\n\n", name[0] ? " " : "", name);
}

static void
compose_receipt(struct buf *b, const char *from, const char *host, const struct tg_mail_refill *m,
                const char *date)
{
	char amount[SHOW_MAX], after[SHOW_MAX], method[METHOD_MAX], subject[128];

	show(m->amount, amount);
	show(m->balance_after, after);
	method_text(m->method, m->token, "the method on file", method);
	snprintf(subject, sizeof(subject), "Auto-refill receipt: %s added to account %llu", amount,
	         (unsigned long long)m->account);
	headers(b, from, host, m, TG_MAIL_RECEIPT, subject, date);
	greeting(b, m);
	put(b,
	    "Your prepaid account was refilled automatically. This is your receipt.\n"
	    "\n"
	    "  Date:               %s\n"
	    "  Account:            %llu\n"
	    "  Amount charged:     %s\n"
	    "  Payment method:     %s\n"
	    "  New balance:        %s\n"
	    "  Gateway reference:  %s\n"
	    "  Request:            %s\n"
	    "\n"
	    "Thank you.\n",
	    date, (unsigned long long)m->account, amount, method, after,
	    m->reference && m->reference[0] ? m->reference : "-", m->request_id);
}

static void
compose_failure(struct buf *b, const char *from, const char *host, const struct tg_mail_refill *m,
                const char *date)
{
	char amount[SHOW_MAX], bal[SHOW_MAX], method[METHOD_MAX], subject[128];

	show(m->amount, amount);
	method_text(m->method, m->token, "none on file", method);
	snprintf(subject, sizeof(subject), "Auto-refill failed for account %llu",
	         (unsigned long long)m->account);
	headers(b, from, host, m, TG_MAIL_FAILURE, subject, date);
	greeting(b, m);
	put(b, "We could not process the auto-refill of your prepaid account %llu:\n%s",
	    (unsigned long long)m->account, reason_text(m->reason));
	if (m->attempts > 1)
		put(b, " (%u attempts)", m->attempts);
	put(b,
	    ".\n"
	    "\n"
	    "  Date:               %s\n"
	    "  Account:            %llu\n"
	    "  Refill amount:      %s\n"
	    "  Payment method:     %s\n",
	    date, (unsigned long long)m->account, amount, method);
	if (m->has_balance) {
		show(m->balance_at_request, bal);
		put(b, "  Balance then:       %s\n", bal);
	}
	char zero[SHOW_MAX];
	show(0, zero);
	put(b,
	    "  Request:            %s\n"
	    "\n"
	    "This is the only notification you will receive.\n"
	    "\n"
	    "Your service continues while your prepaid balance lasts. It is important to\n"
	    "keep in mind that when your prepaid balance falls to %s, you will not be\n"
	    "able to use your service. Credit cards often stop working (expiration,\n"
	    "change of address, etc.): to avoid an interruption, log in to the online\n"
	    "portal and update your payment information, or add credit to your account.\n",
	    m->request_id, zero);
}

/* text with &, <, >, " escaped for HTML; line ends become <br>. */
static void
put_html(struct buf *b, const char *text)
{
	for (const char *p = text ? text : ""; *p != '\0'; p++)
		switch (*p) {
		case '&':
			put(b, "&amp;");
			break;
		case '<':
			put(b, "&lt;");
			break;
		case '>':
			put(b, "&gt;");
			break;
		case '"':
			put(b, "&quot;");
			break;
		case '\n':
			put(b, "<br>\n");
			break;
		default:
			put(b, "%c", *p);
		}
}

/* A paragraph of the text part, wrapped at 76 columns on spaces. */
static void
put_wrapped(struct buf *b, const char *text)
{
	const char *p = text;

	while (*p != '\0') {
		size_t n = strlen(p);
		size_t cut = n;
		const char *nl = strchr(p, '\n');
		if (nl != NULL && (size_t)(nl - p) <= 76)
			cut = (size_t)(nl - p);
		else if (n > 76) {
			cut = 76;
			while (cut > 0 && p[cut] != ' ')
				cut--;
			if (cut == 0)
				cut = 76;
		}
		put(b, "%.*s\n", (int)cut, p);
		p += cut;
		while (*p == ' ' || *p == '\n')
			p++;
	}
}

/*
 * A billing mail: multipart/alternative, text then HTML (RFC 2046: the
 * preferred part last).  The boundary is made of the mail's file name, which
 * holds no character that the parts' own text could mistake for it ("--="
 * never starts a line we write).
 */
static void
compose_notice(struct buf *b, const char *from, const char *host, const struct tg_mail_refill *m,
               const char *date)
{
	const struct tg_mail_bill *bl = m->bill;
	char name[TG_MAIL_NAME_MAX + 1], msgid[TG_MAIL_FILE_MAX], amount[SHOW_MAX];
	char boundary[TG_MAIL_FILE_MAX + 16];

	tg_mail_file_name(m->request_id, TG_MAIL_NOTICE, msgid, sizeof(msgid));
	snprintf(boundary, sizeof(boundary), "=_tg_%s", msgid);
	header_name(m->name, name, sizeof(name));
	if (name[0] != '\0')
		put(b, "To: \"%s\" <%s>\n", name, m->to);
	else
		put(b, "To: %s\n", m->to);
	char subject[256];
	header_name(bl->subject, subject, sizeof(subject));
	put(b,
	    "From: %s\n"
	    "Subject: %s\n"
	    "Date: %s\n"
	    "Message-ID: <%s@%s>\n"
	    "MIME-Version: 1.0\n"
	    "Content-Type: multipart/alternative; boundary=\"%s\"\n"
	    "X-Tollgate-Request: %s\n"
	    "\n"
	    "This is a MIME message: a text part and an HTML part.\n"
	    "\n"
	    "--%s\n"
	    "Content-Type: text/plain; charset=utf-8\n"
	    "Content-Transfer-Encoding: 8bit\n"
	    "\n",
	    from, subject, date, msgid, host, boundary, m->request_id, boundary);
	greeting(b, m);
	put_wrapped(b, bl->what);
	if (bl->nlines > 0 || bl->total_label != NULL) {
		put(b, "\n");
		if (bl->table_title != NULL)
			put(b, "%s\n\n", bl->table_title);
		for (unsigned i = 0; i < bl->nlines; i++) {
			show(bl->lines[i].amount, amount);
			put(b, "  %2u  %-52.52s %12s\n", i + 1, bl->lines[i].text, amount);
		}
		if (bl->total_label != NULL) {
			show(bl->total, amount);
			put(b, "      %-52.52s %12s\n", bl->total_label, amount);
		}
	}
	if (bl->action != NULL) {
		put(b, "\n");
		put_wrapped(b, bl->action);
	}
	put(b, "\nAccount: %llu\nReference: %s\n", (unsigned long long)m->account, m->request_id);

	put(b,
	    "\n--%s\n"
	    "Content-Type: text/html; charset=utf-8\n"
	    "Content-Transfer-Encoding: 8bit\n"
	    "\n"
	    "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>",
	    boundary);
	put_html(b, subject);
	put(b, "</title></head>\n<body>\n<p>Hello");
	body_name(m->name, name, sizeof(name));
	if (name[0] != '\0') {
		put(b, " ");
		put_html(b, name);
	}
	put(b, ",</p>\n<p>");
	put_html(b, bl->what);
	put(b, "</p>\n");
	if (bl->nlines > 0 || bl->total_label != NULL) {
		put(b, "<table>\n");
		if (bl->table_title != NULL) {
			put(b, "<caption>");
			put_html(b, bl->table_title);
			put(b, "</caption>\n");
		}
		for (unsigned i = 0; i < bl->nlines; i++) {
			show(bl->lines[i].amount, amount);
			put(b, "<tr><td>%u</td><td>", i + 1);
			put_html(b, bl->lines[i].text);
			put(b, "</td><td align=\"right\">%s</td></tr>\n", amount);
		}
		if (bl->total_label != NULL) {
			show(bl->total, amount);
			put(b, "<tr><td></td><th align=\"left\">");
			put_html(b, bl->total_label);
			put(b, "</th><th align=\"right\">%s</th></tr>\n", amount);
		}
		put(b, "</table>\n");
	}
	if (bl->action != NULL) {
		put(b, "<p>");
		put_html(b, bl->action);
		put(b, "</p>\n");
	}
	put(b, "<p>Account: %llu<br>\nReference: %s</p>\n</body></html>\n\n--%s--\n",
	    (unsigned long long)m->account, m->request_id, boundary);
}

int
tg_mail_compose(enum tg_mail_kind kind, const struct tg_mail_refill *m, const char *from,
                const char *host, char *out, size_t cap)
{
	struct buf b = {.p = out, .cap = cap};
	char date[DATE_MAX];

	if (!request_id_ok(m->request_id) || !tg_mail_address_ok(m->to) ||
	    !tg_mail_address_ok(from))
		return -EINVAL;
	date_text(m->date != 0 ? m->date : time(NULL), date);
	if (kind == TG_MAIL_NOTICE &&
	    (m->bill == NULL || m->bill->subject == NULL || m->bill->what == NULL ||
	     m->bill->nlines > TG_MAIL_LINES_MAX))
		return -EINVAL;
	if (kind == TG_MAIL_RECEIPT)
		compose_receipt(&b, from, host, m, date);
	else if (kind == TG_MAIL_NOTICE)
		compose_notice(&b, from, host, m, date);
	else
		compose_failure(&b, from, host, m, date);
	if (b.overflow || b.n > (size_t)INT32_MAX)
		return -EMSGSIZE;
	return (int)b.n;
}

/* ---- the handle ---- */

int
tg_notify(struct tg_notifier *n, enum tg_mail_kind kind, const struct tg_mail_refill *m)
{
	TG_CHECK_OBJ_NOTNULL(n, TG_NOTIFIER_MAGIC);
	if (!request_id_ok(m->request_id) || !tg_mail_address_ok(m->to))
		return -EINVAL;
	return n->ops->send(n->impl, kind, m);
}

void
tg_notifier_close(struct tg_notifier *n)
{
	if (n == NULL || n->magic != TG_NOTIFIER_MAGIC)
		return;
	n->ops->close(n->impl);
	memset(n, 0, sizeof(*n));
}

/* This host's name, for Message-IDs and maildir file names. */
static void
host_name(char *out, size_t cap)
{
	if (gethostname(out, cap) != 0 || out[0] == '\0')
		snprintf(out, cap, "localhost");
	out[cap - 1] = '\0';
}

/* ---- the maildir ---- */

struct maildir {
	uint32_t magic;
	int dirfd, tmpfd, newfd, curfd;
	unsigned seq; /* unique names in tmp/ */
	char from[TG_MAIL_ADDR_MAX + 1];
	char host[HOST_MAX];
	char safe_host[HOST_MAX]; /* host with '/' and ':' replaced: fit for a file name */
};

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

/*
 * Whether the mail named name was delivered: in new/, or moved by a reader
 * into cur/ as name or name:2,<flags>.  new/ is looked at first: a mail
 * found in neither was not in new/ when cur/ was read, so no move was under
 * way.  1, 0 or -errno.
 */
static int
maildir_has(const struct maildir *md, const char *name)
{
	size_t len = strlen(name);
	int rc = 0;

	if (faccessat(md->newfd, name, F_OK, AT_SYMLINK_NOFOLLOW) == 0)
		return 1;
	if (errno != ENOENT)
		return -errno;
	int fd = openat(md->curfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
	if (d == NULL) {
		rc = -errno;
		if (fd >= 0)
			close(fd);
		return rc;
	}
	for (struct dirent *e; rc == 0 && (e = readdir(d)) != NULL;)
		if (strncmp(e->d_name, name, len) == 0 &&
		    (e->d_name[len] == '\0' || e->d_name[len] == ':'))
			rc = 1;
	closedir(d);
	return rc;
}

static int
maildir_send(void *impl, enum tg_mail_kind kind, const struct tg_mail_refill *m)
{
	struct maildir *md = impl;
	char text[TG_MAIL_MAX], name[TG_MAIL_FILE_MAX], tmp[HOST_MAX + 96];
	struct timeval tv;
	int fd, rc;

	TG_CHECK_OBJ_NOTNULL(md, MAILDIR_MAGIC);
	if (tg_mail_file_name(m->request_id, kind, name, sizeof(name)) != 0)
		return -EINVAL;
	rc = maildir_has(md, name);
	if (rc != 0)
		return rc < 0 ? rc : 0; /* the common replay: no need to compose */
	int len = tg_mail_compose(kind, m, md->from, md->host, text, sizeof(text));
	if (len < 0)
		return len;

	/* The maildir's unique name: seconds, microseconds, pid, a counter, the host. */
	gettimeofday(&tv, NULL);
	snprintf(tmp, sizeof(tmp), "%lld.M%ldP%dQ%u.%s", (long long)tv.tv_sec, (long)tv.tv_usec,
	         (int)getpid(), ++md->seq, md->safe_host);
	fd = openat(md->tmpfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0)
		return -errno;
	rc = write_all(fd, text, (size_t)len);
	if (rc == 0 && fsync(fd) != 0)
		rc = -errno;
	if (close(fd) != 0 && rc == 0)
		rc = -errno;
	if (rc == 0) {
		rc = linkat(md->tmpfd, tmp, md->newfd, name, 0) == 0 ? 1 : -errno;
		if (rc == -EEXIST)
			rc = 0; /* another worker got there first: its mail is the one */
	}
	unlinkat(md->tmpfd, tmp, 0);
	if (rc == 1 && fsync(md->newfd) != 0)
		tg_log("maildir: fsync of new/ after %s: %s", name, strerror(errno));
	return rc;
}

static void
maildir_close(void *impl)
{
	struct maildir *md = impl;

	TG_CHECK_OBJ_NOTNULL(md, MAILDIR_MAGIC);
	close(md->curfd);
	close(md->newfd);
	close(md->tmpfd);
	close(md->dirfd);
	md->magic = 0;
	free(md);
}

static const struct tg_notifier_ops maildir_ops = {
    .name = "maildir",
    .exclusive = true,
    .send = maildir_send,
    .close = maildir_close,
};

/* Open (making it first when missing) the directory name under dirfd: an fd, or -errno. */
static int
subdir(int dirfd, const char *name)
{
	if (mkdirat(dirfd, name, 0700) != 0 && errno != EEXIST)
		return -errno;
	int fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (faccessat(fd, ".", W_OK, AT_EACCESS) != 0) {
		int e = errno;
		close(fd);
		return -e;
	}
	return fd;
}

int
tg_notifier_maildir_open(struct tg_notifier *n, const char *dir, const char *from)
{
	struct maildir *md;
	int rc;

	memset(n, 0, sizeof(*n));
	if (!tg_mail_address_ok(from))
		return -EINVAL;
	md = calloc(1, sizeof(*md));
	if (md == NULL)
		return -ENOMEM;
	md->dirfd = md->tmpfd = md->newfd = md->curfd = -1;
	rc = subdir(AT_FDCWD, dir);
	if (rc >= 0) {
		md->dirfd = rc;
		rc = subdir(md->dirfd, "tmp");
	}
	if (rc >= 0) {
		md->tmpfd = rc;
		rc = subdir(md->dirfd, "new");
	}
	if (rc >= 0) {
		md->newfd = rc;
		rc = subdir(md->dirfd, "cur");
	}
	if (rc < 0) {
		const int fds[] = {md->dirfd, md->tmpfd, md->newfd};
		for (size_t i = 0; i < TG_ARRAY_LEN(fds); i++)
			if (fds[i] >= 0)
				close(fds[i]);
		free(md);
		return rc;
	}
	md->curfd = rc;
	md->magic = MAILDIR_MAGIC;
	snprintf(md->from, sizeof(md->from), "%s", from);
	host_name(md->host, sizeof(md->host));
	snprintf(md->safe_host, sizeof(md->safe_host), "%s", md->host);
	for (char *p = md->safe_host; *p != '\0'; p++)
		if (*p == '/' || *p == ':')
			*p = '_';
	n->magic = TG_NOTIFIER_MAGIC;
	n->ops = &maildir_ops;
	n->impl = md;
	return 0;
}

/* ---- sendmail ---- */

struct sendmail {
	uint32_t magic;
	const char *cmd; /* borrowed */
	char from[TG_MAIL_ADDR_MAX + 1];
	char host[HOST_MAX];
};

static int
sendmail_send(void *impl, enum tg_mail_kind kind, const struct tg_mail_refill *m)
{
	struct sendmail *sm = impl;
	char text[TG_MAIL_MAX];

	TG_CHECK_OBJ_NOTNULL(sm, SENDMAIL_MAGIC);
	int len = tg_mail_compose(kind, m, sm->from, sm->host, text, sizeof(text));
	if (len < 0)
		return len;
	FILE *f = popen(sm->cmd, "we");
	if (f == NULL) {
		int e = errno ? errno : ENOMEM;
		tg_log("%s: cannot run \"%s\": %s", m->request_id, sm->cmd, strerror(e));
		return -e;
	}
	size_t w = fwrite(text, 1, (size_t)len, f);
	int status = pclose(f);
	if (w != (size_t)len || status == -1 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
		tg_log("%s: \"%s\" failed (%s %d): the %s mail was not sent", m->request_id,
		       sm->cmd, status != -1 && WIFSIGNALED(status) ? "signal" : "status",
		       status == -1          ? -1
		       : WIFSIGNALED(status) ? WTERMSIG(status)
		                             : WEXITSTATUS(status),
		       tg_mail_kind_name(kind));
		return -EIO;
	}
	return 1;
}

static void
sendmail_close(void *impl)
{
	struct sendmail *sm = impl;

	TG_CHECK_OBJ_NOTNULL(sm, SENDMAIL_MAGIC);
	sm->magic = 0;
	free(sm);
}

static const struct tg_notifier_ops sendmail_ops = {
    .name = "sendmail",
    .exclusive = false,
    .send = sendmail_send,
    .close = sendmail_close,
};

int
tg_notifier_sendmail_open(struct tg_notifier *n, const char *cmd, const char *from)
{
	struct sendmail *sm;

	memset(n, 0, sizeof(*n));
	if (!tg_mail_address_ok(from) || cmd == NULL || cmd[0] == '\0')
		return -EINVAL;
	sm = calloc(1, sizeof(*sm));
	if (sm == NULL)
		return -ENOMEM;
	sm->magic = SENDMAIL_MAGIC;
	sm->cmd = cmd;
	snprintf(sm->from, sizeof(sm->from), "%s", from);
	host_name(sm->host, sizeof(sm->host));
	n->magic = TG_NOTIFIER_MAGIC;
	n->ops = &sendmail_ops;
	n->impl = sm;
	return 0;
}
