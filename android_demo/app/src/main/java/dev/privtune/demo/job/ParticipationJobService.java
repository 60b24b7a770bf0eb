package dev.privtune.demo.job;

import android.app.job.JobParameters;
import android.app.job.JobService;
import android.util.Log;
import dev.privtune.demo.AppServices;
import dev.privtune.demo.round.RoundOutcome;

/**
 * Runs one participation attempt when JobScheduler starts the job (charging, idle, unmetered), on a
 * worker thread. If the system stops the job (a constraint no longer holds), the thread is
 * interrupted (training stops before its next step) and the job asks to be rescheduled.
 */
public final class ParticipationJobService extends JobService {
    private static final String TAG = "privtune.job";
    private Thread worker;

    @Override
    public boolean onStartJob(final JobParameters params) {
        worker = new Thread(new Runnable() {
            @Override
            public void run() {
                boolean reschedule = false;
                try {
                    RoundOutcome outcome = AppServices.participate(getApplicationContext());
                    Log.i(TAG, outcome.summary());
                    reschedule = outcome.kind() == RoundOutcome.Kind.PENDING;
                } catch (Exception e) {
                    Log.w(TAG, "participation failed: " + e, e);
                    reschedule = !(e instanceof IllegalStateException || e instanceof IllegalArgumentException);
                }
                jobFinished(params, reschedule);
            }
        }, "privtune-participation");
        worker.start();
        return true;
    }

    @Override
    public boolean onStopJob(JobParameters params) {
        if (worker != null) {
            worker.interrupt();
        }
        return true;
    }
}
