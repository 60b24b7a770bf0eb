package dev.privtune.demo;

import android.app.job.JobInfo;
import android.test.AndroidTestCase;
import dev.privtune.demo.job.JobScheduling;

/** Background participation runs only while charging, idle and on an unmetered network. */
public class JobSchedulingTest extends AndroidTestCase {
    public void testJobRequiresChargingIdleAndUnmeteredNetwork() {
        JobInfo job = JobScheduling.participationJob(getContext());
        assertTrue(job.isRequireCharging());
        assertTrue(job.isRequireDeviceIdle());
        assertEquals(JobInfo.NETWORK_TYPE_UNMETERED, job.getNetworkType());
        assertTrue(job.isPeriodic());
        assertTrue(job.isPersisted());
    }

    public void testScheduleAndCancel() {
        JobScheduling.schedule(getContext());
        try {
            JobInfo pending = JobScheduling.pending(getContext());
            assertNotNull("the job is not pending after schedule()", pending);
            assertTrue(pending.isRequireCharging() && pending.isRequireDeviceIdle());
        } finally {
            JobScheduling.cancel(getContext());
        }
        assertNull(JobScheduling.pending(getContext()));
    }
}
