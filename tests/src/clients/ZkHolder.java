// A real ZooKeeper client: opens N sessions with the official Java library, holds them,
// and closes K of them on "close K" from stdin. Prints "ready" and "closed" for the test.
import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import org.apache.zookeeper.Watcher;
import org.apache.zookeeper.ZooKeeper;

public class ZkHolder {
    public static void main(String[] args) throws Exception {
        String connect = args[0];
        int n = Integer.parseInt(args[1]);
        List<ZooKeeper> sessions = new ArrayList<>();
        for (int i = 0; i < n; i++) {
            CountDownLatch up = new CountDownLatch(1);
            ZooKeeper zk = new ZooKeeper(connect, 30000, e -> {
                if (e.getState() == Watcher.Event.KeeperState.SyncConnected) up.countDown();
            });
            if (!up.await(30, TimeUnit.SECONDS)) throw new IllegalStateException("no session");
            sessions.add(zk);
        }
        System.out.println("ready");
        System.out.flush();
        BufferedReader in = new BufferedReader(new InputStreamReader(System.in));
        String line;
        while ((line = in.readLine()) != null) {
            if (line.startsWith("close ")) {
                int k = Integer.parseInt(line.substring(6).trim());
                for (int i = 0; i < k; i++) sessions.remove(0).close();
                System.out.println("closed");
                System.out.flush();
            }
        }
    }
}
