/*
 * datadir.c - the data directory's lock (tg_datadir.h), written once for
 * tollgated (durable.c) and tollctl's offline journal commands; and the
 * small files of the directory (repl.history, repl.reset, ids-forgot),
 * replaced whole.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/file.h>
#include <unistd.h>

#include "tg_datadir.h"
#include "tg_log.h"

int
tg_datadir_lock(const char *dir, bool own)
{
	char path[PATH_MAX];
	int fd, rc;

	snprintf(path, sizeof(path), "%s/LOCK", dir);
	fd = open(path, (own ? O_RDWR : O_RDONLY) | O_CREAT | O_CLOEXEC, 0600);
	if (fd < 0)
		return -errno;
	if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
		rc = -errno;
		close(fd);
		return rc;
	}
	if (own) {
		char pid[24];
		int n = snprintf(pid, sizeof(pid), "%d\n", (int)getpid());
		if (ftruncate(fd, 0) != 0 || pwrite(fd, pid, (size_t)n, 0) != n)
			tg_log("data-dir %s: cannot write the pid into LOCK (ignored)", dir);
	}
	return fd;
}

long
tg_datadir_holder(const char *dir)
{
	char path[PATH_MAX], buf[24] = "";
	long pid = 0;

	snprintf(path, sizeof(path), "%s/LOCK", dir);
	FILE *f = fopen(path, "re");
	if (f == NULL)
		return 0;
	if (fgets(buf, sizeof(buf), f) != NULL)
		pid = strtol(buf, NULL, 10);
	fclose(f);
	if (pid <= 0 || (kill((pid_t)pid, 0) != 0 && errno != EPERM))
		return 0;
	return pid;
}

int
tg_datadir_write(const char *dir, const char *name, const char *text, size_t len)
{
	char path[PATH_MAX], tmp[PATH_MAX];

	if (snprintf(path, sizeof(path), "%s/%s", dir, name) >= (int)sizeof(path) ||
	    snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= (int)sizeof(tmp))
		return -ENAMETOOLONG;
	int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		return -errno;
	ssize_t n = write(fd, text, len);
	int rc = n == (ssize_t)len && fsync(fd) == 0 ? 0 : -(errno ? errno : EIO);
	close(fd);
	if (rc == 0 && rename(tmp, path) != 0)
		rc = -errno;
	if (rc != 0) {
		(void)unlink(tmp);
		return rc;
	}
	int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0 || fsync(dfd) != 0)
		rc = -errno;
	if (dfd >= 0)
		close(dfd);
	return rc;
}
