package dev.privtune.demo.ui;

import android.app.Activity;

/** Runs blocking work (bundle hashing, inference, training, network) off the UI thread. */
final class Background {
    /** The blocking part. */
    interface Task<T> {
        T run() throws Exception;
    }

    /** Called on the UI thread with the result or the failure. */
    interface Done<T> {
        void ok(T value);

        void failed(Exception error);
    }

    private Background() {}

    static <T> void run(final Activity activity, final Task<T> task, final Done<T> done) {
        new Thread(new Runnable() {
            @Override
            public void run() {
                T value = null;
                Exception error = null;
                try {
                    value = task.run();
                } catch (Exception e) {
                    error = e;
                }
                final T result = value;
                final Exception failure = error;
                activity.runOnUiThread(new Runnable() {
                    @Override
                    public void run() {
                        if (activity.isFinishing()) {
                            return;
                        }
                        if (failure != null) {
                            done.failed(failure);
                        } else {
                            done.ok(result);
                        }
                    }
                });
            }
        }, "privtune-ui-task").start();
    }

    /** The message of an error, with its type when it has none. */
    static String describe(Exception e) {
        String message = e.getMessage();
        return message == null || message.isEmpty() ? e.getClass().getSimpleName() : message;
    }
}
