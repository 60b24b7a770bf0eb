package dev.privtune.demo.job;

import android.app.job.JobInfo;
import android.app.job.JobScheduler;
import android.content.ComponentName;
import android.content.Context;

/**
 * Background participation through {@link JobScheduler}: only while the phone is charging AND idle
 * AND on an unmetered network, periodically, surviving reboots.
 */
public final class JobScheduling {
    /** The job's id. */
    public static final int JOB_ID = 8001;
    /** How often the job may run when its constraints hold (6 hours). */
    public static final long PERIOD_MS = 6L * 60 * 60 * 1000;

    private JobScheduling() {}

    /** The job: requires charging, device idle and an unmetered network; periodic; persisted. */
    public static JobInfo participationJob(Context context) {
        return new JobInfo.Builder(JOB_ID, new ComponentName(context, ParticipationJobService.class))
                .setRequiresCharging(true)
                .setRequiresDeviceIdle(true)
                .setRequiredNetworkType(JobInfo.NETWORK_TYPE_UNMETERED)
                .setPeriodic(PERIOD_MS)
                .setPersisted(true)
                .build();
    }

    /**
     * Schedules (or replaces) the participation job.
     *
     * @throws IllegalStateException when JobScheduler refuses it
     */
    public static void schedule(Context context) {
        JobScheduler scheduler = (JobScheduler) context.getSystemService(Context.JOB_SCHEDULER_SERVICE);
        int result = scheduler.schedule(participationJob(context));
        if (result != JobScheduler.RESULT_SUCCESS) {
            throw new IllegalStateException("JobScheduler refused the participation job (result " + result + ")");
        }
    }

    /** Cancels the participation job. */
    public static void cancel(Context context) {
        JobScheduler scheduler = (JobScheduler) context.getSystemService(Context.JOB_SCHEDULER_SERVICE);
        scheduler.cancel(JOB_ID);
    }

    /** The scheduled participation job, or null. */
    public static JobInfo pending(Context context) {
        JobScheduler scheduler = (JobScheduler) context.getSystemService(Context.JOB_SCHEDULER_SERVICE);
        for (JobInfo job : scheduler.getAllPendingJobs()) {
            if (job.getId() == JOB_ID) {
                return job;
            }
        }
        return null;
    }
}
