/* Stop signals (SIGUSR1, SIGTERM, SIGINT) as a request the search polls; see
 * stop.c for why one thread takes them instead of a handler. Private to
 * src/train. */
#ifndef MD_TRAIN_STOP_H
#define MD_TRAIN_STOP_H

/* Block the stop signals in the calling thread (and so in every thread made
 * after it) and start the thread that takes them. Call before any other thread
 * exists. Again: nothing while armed (a request made already stays); after
 * md_stop_release or md_stop_ignore_further, re-arms with no request. -1 if no thread could be
 * made (the signals then keep their dispositions). */
int  md_stop_catch(void);
int  md_stop_requested(void);
/* After a stop: later stop signals are ignored (exit 75 stays exit 75). */
void md_stop_ignore_further(void);
/* After a normal end: stop signals act as before md_stop_catch. */
void md_stop_release(void);
/* Send sig to this process and wait until it has been taken (test hooks). */
void md_stop_send_self(int sig);

#endif
