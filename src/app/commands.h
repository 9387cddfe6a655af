/* The subcommands of mdenas_mpi. */
#ifndef MDENAS_APP_COMMANDS_H
#define MDENAS_APP_COMMANDS_H

#include <stdio.h>

#include "mdenas/search.h"

void md_search_usage(FILE *f);
void md_train_usage(FILE *f);
void md_rankcheck_usage(FILE *f);
/* train = 1: `mdenas_mpi train`'s options, 2: rankcheck's (train's and --archs). 0: parsed; 2: usage error (printed). */
int  md_search_parse(int argc, char **argv, int train, md_search_config *c);
/* After a stop: the exact command that resumes the run (its --out absolute). */
void md_search_print_resume(FILE *f, const char *prog, int argc, char **argv,
                            const md_search_config *c, int world);

#endif
